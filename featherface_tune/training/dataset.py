"""Training data: a torch Dataset over ImageRecords, the stratified `--subset`, collate, and an
in-memory tensor path (pre-augmented batches) for benchmarks."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from featherface_tune.data.images import read_image_bgr
from featherface_tune.data.records import ImageRecord
from featherface_tune.training.augment import augment, plain, to_targets
from featherface_tune.training.spec import check_image_size, check_subset


def stratified_subset(records: Sequence[ImageRecord], fraction: float, seed: int = 0) -> list[ImageRecord]:
    """A seeded share of the records, drawn per event so every event keeps its share.

    fraction in (0, 1]: that fraction of the images; a whole number above 1: about that many images
    (the fraction count / total). Each event keeps round(fraction * its count) images, at least one;
    the input order is kept.
    """
    check_subset(fraction, "fraction")
    if fraction > 1:
        fraction = min(1.0, fraction / max(1, len(records)))
    if fraction == 1.0:
        return list(records)
    by_event: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_event[r.event].append(i)
    keep: list[int] = []
    for event in sorted(by_event):
        idx = by_event[event]
        k = max(1, int(round(fraction * len(idx))))
        # one generator per event, so an event's pick does not depend on the other events
        rng = np.random.default_rng([seed, _stable_hash(event)])
        keep.extend(idx[j] for j in rng.permutation(len(idx))[:k])
    return [records[i] for i in sorted(keep)]


def _stable_hash(text: str) -> int:
    h = 2166136261
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


class FaceDataset(Dataset):
    """Augmented training samples. Sample i of epoch e is drawn from Generator([seed, e, i]), so the
    data does not depend on worker count or on where a run was resumed.

    Returns (float32 [3, S, S] BGR-minus-mean image, float32 [n, 15] normalised targets).
    cache: keep decoded images in memory (per process) after the first read, up to cache_bytes
    (2 GiB by default; images beyond it are read from disk each time).
    """

    def __init__(self, records: Sequence[ImageRecord], image_size: int, seed: int = 0,
                 augment: bool = True, cache: bool = False, cache_bytes: int = 2 << 30,
                 image_ops: str = "pillow"):
        check_image_size(image_size)
        self.records = list(records)
        self.targets = [to_targets(r.boxes, r.landmarks) for r in self.records]
        self.image_size = image_size
        self.seed = seed
        self.augment = augment
        self.image_ops = image_ops  # augment.IMAGE_OPS: the library behind resize and HSV
        self.cache = cache
        self.cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> np.ndarray:
        if self.cache and index in self._images:
            return self._images[index]
        img = read_image_bgr(self.records[index].path)
        if self.cache and self._cached_bytes + img.nbytes <= self.cache_bytes:
            self._images[index] = img
            self._cached_bytes += img.nbytes
        return img

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """key: (epoch, index) as EpochSampler yields, which also works in persistent DataLoader
        workers; a bare index means epoch 0."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        img = self.image(index)
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, index])
            x, t = augment(img, self.targets[index], self.image_size, rng, self.image_ops)
        else:
            x, t = plain(img, self.targets[index], self.image_size, self.image_ops)
        return torch.from_numpy(x), torch.from_numpy(t)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Stack images; keep targets as a list (face counts differ)."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) over the epoch's seeded permutation from position `start` (to resume
    inside an epoch). One sampler serves a whole run: call set_epoch before iterating."""

    def __init__(self, n: int, seed: int, epoch: int = 0, start: int = 0, shuffle: bool = True):
        self.n, self.seed, self.epoch, self.start, self.shuffle = n, seed, epoch, start, shuffle

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter([(self.epoch, i) for i in self.order()[self.start:]])

    def __len__(self) -> int:
        return max(0, self.n - self.start)


def preload(dataset: FaceDataset, count: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`count` augmented samples (cycling the dataset) as one in-memory tensor + targets: the
    benchmark's pure-compute path."""
    xs, ts = [], []
    for i in range(count):
        x, t = dataset[i % len(dataset)]
        xs.append(x)
        ts.append(t)
    return torch.stack(xs), ts
