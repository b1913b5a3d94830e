"""Training recipes: the official FeatherFace recipe and the project's short-run recipe.

A recipe fixes how a run trains, beyond the network: the learning-rate schedule, which tensors get
weight decay, the image library behind resizing and HSV, the prior matching rule, and the defaults
of run length, backbone and precision. `official` is what github dohun-mat/FeatherFace's `train.py`
does (its data, loss and box code are RetinaFace's, github biubug6/Pytorch_Retinaface):

- `torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, epochs, steps_per_epoch=ceil(images / batch))`,
  stepped after every batch, with its default momentum cycling (Adam's beta1 0.95 -> 0.85 -> 0.95);
- `AdamW(model.parameters(), lr)`: weight decay 0.01 on every tensor, biases and norms included;
- batch 32, 350 epochs, the ImageNet MobileNetV1-0.25 backbone, fp32;
- OpenCV's `cv2.resize` (random interpolation) and `cv2.cvtColor` HSV (hue 0-179);
- RetinaFace's matching loop, which also points the best prior of an ignored (best IoU < 0.2) face
  at that face.

`short` is the project's recipe for short proxy runs: one epoch of linear warm-up then cosine to
1 % of the peak, no decay on 1-d tensors (biases, norms), Pillow's resampling and HSV, 10 epochs of
batch 8, bf16 autocast on CUDA, no backbone unless given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featherface_tune.errors import InputError

# where the official code loads the backbone from (models/retinaface.py), relative to the working folder
DEFAULT_BACKBONE = Path("weights") / "mobilenetV1X0.25_pretrain.tar"


@dataclass(frozen=True)
class Recipe:
    name: str
    schedule: str  # "onecycle" (per-batch OneCycleLR) or "warmup-cosine"
    decay_every_tensor: bool  # False: no weight decay on 1-d tensors
    image_ops: str  # "opencv" or "pillow": the library behind resize and HSV in augmentation
    official_match: bool  # RetinaFace's loop also re-points ignored faces' best priors
    epochs: int
    batch_size: int
    amp: str  # default --amp
    needs_backbone: bool  # default --pretrained: DEFAULT_BACKBONE (required) or none
    summary: str  # one line for --help and docs

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "schedule": self.schedule, "decay_every_tensor": self.decay_every_tensor,
                "image_ops": self.image_ops, "official_match": self.official_match}


RECIPES: dict[str, Recipe] = {
    "official": Recipe("official", "onecycle", True, "opencv", True, epochs=350, batch_size=32, amp="off",
                       needs_backbone=True,
                       summary="FeatherFace's train.py: OneCycleLR per batch, AdamW decay on every tensor, "
                               "batch 32, 350 epochs, pretrained backbone, fp32, OpenCV"),
    "short": Recipe("short", "warmup-cosine", False, "pillow", False, epochs=10, batch_size=8, amp="auto",
                    needs_backbone=False,
                    summary="short runs: warm-up + cosine, no decay on 1-d tensors, batch 8, 10 epochs, "
                            "bf16 on CUDA, Pillow"),
}
DEFAULT_RECIPE = "official"  # of the `train` command; TrainOptions (the Python API) defaults to "short"


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise InputError(field="recipe", value=name, rule=f"must be one of {', '.join(RECIPES)}")
    return RECIPES[name]


def resolve_backbone(recipe: Recipe, pretrained: str | None) -> Path | None:
    """--pretrained as given (a file, or "none" to train from scratch), else the recipe's default:
    the official recipe needs DEFAULT_BACKBONE (never downloaded: a missing file is a one-line error
    saying where to put it)."""
    if pretrained is not None:
        if pretrained.strip().lower() == "none":
            return None
        path = Path(pretrained)
        if not path.is_file():
            raise InputError(field="pretrained", value=pretrained, rule="does not exist")
        return path
    if not recipe.needs_backbone:
        return None
    if not DEFAULT_BACKBONE.is_file():
        raise InputError(
            field="recipe", value=recipe.name, refs=("pretrained",),
            rule=f"needs the ImageNet MobileNetV1-0.25 backbone {str(DEFAULT_BACKBONE)!r} "
                 "(mobilenetV1X0.25_pretrain.tar from the RetinaFace/FeatherFace releases): put it there, "
                 "or pass {pretrained} FILE, or {pretrained} none to train from scratch")
    return DEFAULT_BACKBONE
