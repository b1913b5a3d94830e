"""One module per CLI command; `featherface_tune.cli` composes them."""
