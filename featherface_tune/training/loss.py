"""RetinaFace's MultiBox loss (layers/modules/multibox_loss.py), vectorised over the batch.

total = loc_weight * smooth-L1(boxes) + cross-entropy(faces + hard negatives) + smooth-L1(landmarks)
Boxes and classes are normalised by the number of face priors, landmarks by the number of face
priors whose face has landmarks. Hard-negative mining keeps, per image, the `neg_pos` x (face
priors) background priors of highest classification loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from featherface_tune.training.distributed import sum_over_ranks
from featherface_tune.training.match import MATCH_THRESHOLD, VARIANCES, MatchTargets, match


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    loc: torch.Tensor
    conf: torch.Tensor
    landm: torch.Tensor
    num_pos: int


def hard_negatives(conf_loss: torch.Tensor, pos: torch.Tensor, neg_pos: int) -> torch.Tensor:
    """[B, P] bool: per image the neg_pos * num_pos background priors of highest loss.

    conf_loss: per-prior classification loss [B, P] (no grad needed); pos: face priors [B, P].
    Ties break by prior index (stable sort), so the choice is deterministic.
    """
    loss = conf_loss.detach().masked_fill(pos, 0.0)
    order = torch.sort(loss, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    num_neg = (neg_pos * pos.long().sum(1, keepdim=True)).clamp(max=pos.shape[1] - 1)
    return (rank < num_neg) & ~pos


class MultiBoxLoss(torch.nn.Module):
    def __init__(self, neg_pos: int = 7, loc_weight: float = 2.0, threshold: float = MATCH_THRESHOLD,
                 variances: tuple[float, float] = VARIANCES, official_match: bool = False):
        super().__init__()
        self.official_match = official_match  # see match.match_one
        self.neg_pos = neg_pos
        self.loc_weight = loc_weight
        self.threshold = threshold
        self.variances = variances

    def forward(self, predictions: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
                priors: torch.Tensor, targets: list[torch.Tensor] | MatchTargets) -> LossParts:
        loc_p, conf_p, ldm_p = predictions
        m = targets if isinstance(targets, MatchTargets) else match(
            targets, priors, self.threshold, self.variances, self.official_match)
        if m.labels.shape != conf_p.shape[:2]:
            raise ValueError(f"the model predicts {conf_p.shape[1]} priors but {m.labels.shape[1]} "
                             "were matched (image size or anchors_per_cell differ)")
        pos = m.labels > 0
        npos = pos.sum()
        # over every process of a data-parallel run (training.distributed): each loss is its share
        n = sum_over_ranks(npos.to(loc_p.dtype)).clamp(min=1)
        loss_l = F.smooth_l1_loss(loc_p[pos], m.loc[pos], reduction="sum") / n
        per_prior = F.cross_entropy(conf_p.reshape(-1, 2), m.labels.reshape(-1),
                                    reduction="none").reshape(pos.shape)
        neg = hard_negatives(per_prior, pos, self.neg_pos)
        loss_c = per_prior[pos | neg].sum() / n
        if ldm_p is not None:
            has = m.has_landmarks
            n1 = sum_over_ranks(has.sum().to(loc_p.dtype)).clamp(min=1)
            loss_m = F.smooth_l1_loss(ldm_p[has], m.landmarks[has], reduction="sum") / n1
        else:
            loss_m = loc_p.new_zeros(())
        total = self.loc_weight * loss_l + loss_c + loss_m
        return LossParts(total=total, loc=loss_l, conf=loss_c, landm=loss_m, num_pos=int(npos))
