"""LSHFM: feature mimicking with L2, LSH, or both (Wang et al., "Distilling Knowledge by Mimicking
Features", TPAMI 2021).

Paper: https://arxiv.org/abs/2011.01424
(official code: https://github.com/DoctorKey/LSHFM.detection).

For M paired feature vectors f_s, f_t of size D (rows of (M, D) matrices):

- L2 (:func:`l2_rows`): mean_D (f_s - f_t)^2 per row;
- LSH (:func:`lsh_rows`): a frozen Gaussian projection W (K, D), W_ij ~ N(0, std^2), bias b (K,)
  (0 in every official detection run) hashes both; the student's logits h_s = W f_s + b are
  trained with BCE-with-logits against the teacher's signs y = 1[W f_t + b > 0], mean over K;
- rows are averaged, globally or per image first (:func:`reduce_rows`);
- ``l2``: beta L2; ``lsh``: beta LSH; ``lshl2``: beta (L2 + LSH).

The projection is a buffer drawn from a seeded CPU generator, so it is identical on every process
(no reliance on DDP's broadcast) and is saved with the KD state. All math runs in fp32 with
autocast off: the BCE has no finite minimiser (it pushes |W f_s| up along the teacher's signs),
which is where the paper's runs met NaN.
"""

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MODES", "l2_rows", "lsh_rows", "reduce_rows", "LSHProjection", "MimicLoss"]

MODES = ("l2", "lsh", "lshl2")


def _check_pair(f_s: Tensor, f_t: Tensor, owner: str) -> None:
    if f_s.dim() != 2 or f_s.shape != f_t.shape:
        raise ValueError(
            f"[{owner}] expected student and teacher features of the same shape (M, D), got "
            f"{tuple(f_s.shape)} and {tuple(f_t.shape)}"
        )


def l2_rows(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Per-row mean squared difference.

    Args:
        f_s: (M, D) student features.
        f_t: (M, D) teacher features (treated as constant).

    Returns:
        (M,) fp32: mean over D of (f_s - f_t)^2.
    """
    _check_pair(f_s, f_t, "l2_rows")
    diff = f_s.float() - f_t.detach().float()
    return diff.pow(2).mean(dim=1)


def lsh_rows(f_s: Tensor, f_t: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Per-row LSH loss: BCE-with-logits of the student's hash logits on the teacher's hash bits.

    Args:
        f_s: (M, D) student features.
        f_t: (M, D) teacher features (treated as constant).
        weight: (K, D) projection W.
        bias: (K,) projection bias b, or None for 0.

    Returns:
        (M,) fp32: mean over K of BCEWithLogits(W f_s + b, 1[W f_t + b > 0]).
    """
    _check_pair(f_s, f_t, "lsh_rows")
    if weight.dim() != 2 or weight.shape[1] != f_s.shape[1]:
        raise ValueError(
            f"[lsh_rows] projection expected (K, {f_s.shape[1]}), got {tuple(weight.shape)}"
        )
    weight = weight.float()
    bias = bias.float() if bias is not None else None
    h_s = F.linear(f_s.float(), weight, bias)
    with torch.no_grad():
        target = (F.linear(f_t.detach().float(), weight, bias) > 0).float()
    return F.binary_cross_entropy_with_logits(h_s, target, reduction="none").mean(dim=1)


def reduce_rows(
    rows: Tensor, image_ids: Optional[Tensor] = None, num_images: Optional[int] = None
) -> Tensor:
    """Average per-row losses into a scalar, without host syncs.

    Args:
        rows: (M,) per-row losses.
        image_ids: (M,) int64 image index of each row, or None. With ids, rows are averaged per
            image, then over the images that have rows (the official RetinaNet reduction);
            without, over all rows (the official Faster R-CNN reduction).
        num_images: number of images (>= max id + 1); needed with ``image_ids``.

    Returns:
        A scalar; 0 (still attached to ``rows``' graph) when M = 0.
    """
    if rows.numel() == 0:
        return rows.sum() * 0.0
    if image_ids is None:
        return rows.mean()
    if num_images is None:
        raise ValueError("[reduce_rows] num_images is required with image_ids")
    counts = torch.bincount(image_ids, minlength=num_images).to(rows.dtype)
    sums = rows.new_zeros(num_images).index_add(0, image_ids, rows)
    per_image = sums / counts.clamp(min=1)
    return per_image.sum() / (counts > 0).sum().clamp(min=1)


class LSHProjection(nn.Module):
    """The frozen hash projection W (K, D) and bias b (K,), held as buffers.

    W = std * Z with Z ~ N(0, 1) drawn from a CPU generator seeded with ``seed``: the same on
    every process and machine, and reset to the same draw whenever ``std`` changes, so setting
    the scale twice cannot compound. Saved in ``state_dict`` (``weight``, ``bias``, ``std``).

    Args:
        dim: feature size D.
        hash_num: number of hash functions K.
        std: scale of W (LSHFM sets it from the teacher's classifier weights, see
            :meth:`set_std`).
        seed: generator seed.
    """

    def __init__(self, dim: int, hash_num: int, std: float = 1.0, seed: int = 0):
        super().__init__()
        if dim < 1 or hash_num < 1:
            raise ValueError(
                f"[LSHProjection] dim and hash_num must be >= 1, got {dim}, {hash_num}"
            )
        self.dim, self.hash_num, self.seed = dim, hash_num, seed
        self.register_buffer("weight", torch.empty(hash_num, dim))
        self.register_buffer("bias", torch.zeros(hash_num))
        self.register_buffer("std", torch.tensor(float(std)))
        self.set_std(std)

    @torch.no_grad()
    def set_std(self, std: float) -> None:
        """Redraw W = std * Z from the seed (idempotent); b stays 0 as in the official runs."""
        std = float(std)
        if not std > 0:
            raise ValueError(f"[LSHProjection] std must be positive, got {std}")
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        z = torch.randn(self.hash_num, self.dim, generator=gen, dtype=torch.float32)
        self.weight.copy_(z.mul_(std))
        self.std.fill_(std)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hash_num={self.hash_num}, seed={self.seed}"


class MimicLoss(nn.Module):
    """LSHFM's mimic loss on (M, D) feature rows: ``l2``, ``lsh`` or ``lshl2``.

    Args:
        dim: feature size D.
        mode: one of ``l2``, ``lsh``, ``lshl2``.
        beta: loss weight beta (the paper's 7 for R50 students, 8 for VGG11 RetinaNet).
        hash_num: hash functions K; None means 4 D (the official default).
        std: projection scale before the teacher is known (the terms reset it from the teacher).
        seed: projection seed.
    """

    def __init__(
        self,
        dim: int,
        mode: str = "lshl2",
        beta: float = 7.0,
        hash_num: Optional[int] = None,
        std: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"[MimicLoss] mode must be one of {MODES}, got '{mode}'")
        self.dim, self.mode, self.beta = dim, mode, float(beta)
        self.projection: Optional[LSHProjection] = None
        if mode != "l2":
            self.projection = LSHProjection(dim, hash_num or 4 * dim, std=std, seed=seed)

    def forward(
        self,
        f_s: Tensor,
        f_t: Tensor,
        image_ids: Optional[Tensor] = None,
        num_images: Optional[int] = None,
    ) -> Dict[str, Tensor]:
        """Compute the weighted parts.

        Args:
            f_s: (M, D) student features (any float dtype; computed in fp32).
            f_t: (M, D) teacher features; detached here.
            image_ids, num_images: per-image averaging, see :func:`reduce_rows`.

        Returns:
            {"l2": beta L2} and/or {"lsh": beta LSH}, as the mode asks: fp32 scalars whose sum is
            the mode's loss, each 0 (attached to ``f_s``) when M = 0.
        """
        if f_s.dim() != 2 or f_s.shape[1] != self.dim:
            raise ValueError(
                f"[MimicLoss] student features expected (M, {self.dim}), got {tuple(f_s.shape)}"
            )
        out: Dict[str, Tensor] = {}
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            if self.mode in ("l2", "lshl2"):
                out["l2"] = self.beta * reduce_rows(l2_rows(f_s, f_t), image_ids, num_images)
            if self.projection is not None:
                rows = lsh_rows(f_s, f_t, self.projection.weight, self.projection.bias)
                out["lsh"] = self.beta * reduce_rows(rows, image_ids, num_images)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode}, beta={self.beta}"
