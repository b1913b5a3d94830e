"""`python -m featherface_tune`: the same command line as `featherface-tune`."""

from featherface_tune.cli import main

if __name__ == "__main__":
    main()
