"""The run specs are torch-free: with torch, fvcore and scipy made unimportable (`None` in
sys.modules makes any import of the name raise ImportError), the tuner's API imports, and a
`Fidelity` and a `TrainOptions` are built and checked, as an analytic search or a search that only
checks its proxy options needs; `training.spec` never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "import sys; sys.modules.update({m: None for m in ('torch', 'fvcore', 'scipy')}); "

SCRIPT = """
import json
import featherface_tune.tuner.api
from featherface_tune.errors import InputError
from featherface_tune.training.spec import Fidelity, TrainOptions

fid = Fidelity.from_search_options(epochs=2, subset=0.5, image_size=160)
opts = fid.train_options()
opts.validate()
TrainOptions(epochs=3, amp="bf16", recipe="official", optimizer="sgd").validate()
errors = {}
for name, make in (("amp", lambda: TrainOptions(amp="fp8").validate()),
                   ("recipe", lambda: TrainOptions(recipe="long").validate()),
                   ("proxy_image_size", lambda: Fidelity.from_search_options(image_size=100))):
    try:
        make()
    except InputError as exc:
        errors[name] = exc.field
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "scipy", "fvcore") and sys.modules[m] is not None)
print(json.dumps({"epochs": opts.epochs, "image_size": opts.image_size, "errors": errors, "loaded": loaded}))
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)


def test_specs_build_and_check_without_torch():
    run = _run(BLOCK + "import sys\n" + SCRIPT)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert (got["epochs"], got["image_size"]) == (2, 160)
    # the torch-free checks still refuse what train() would (the device alone waits for train())
    assert got["errors"] == {"amp": "amp", "recipe": "recipe", "proxy_image_size": "proxy_image_size"}
    assert got["loaded"] == []


def test_the_block_really_blocks():
    """The guard must be able to fail: the module that trains stops at its torch import."""
    run = _run(BLOCK + "import featherface_tune.training.proxy")
    assert run.returncode != 0 and "torch" in run.stderr
