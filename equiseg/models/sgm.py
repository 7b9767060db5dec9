"""Self-Guided Module (SGM), paper §2.2 / Fig. 1(c), SPEC §1.5 -- a training-only loss.

For each stage ``i`` and present modality ``n`` the class prototypes of the stage features (Eq. 3)
``P_n[c] = mean_j f^j 1[l_j = c]`` are taken over the whole batch, with the labels resized to the
stage grid by nearest interpolation (ignore 255; classes absent from the batch are left out; the sum is
divided by the count once -- a reference implementation divides twice). Each step the modalities are
shuffled (one dropped at random when their number is odd); the first half are teachers, the second half
students, paired in order. For a pair and each channel ``d``, ``p = softmax_c P[:, d]`` over the present
classes and ``KL(t‖s) = Σ_c p_t log(p_t / p_s)``, averaged over channels; the teacher is detached.
``L_s = Σ_stages Σ_pairs KL`` (Eq. 4).

Ablations (paper Tab. 3): ``prototype=False`` applies the same KL to pixel features (softmax over
channels, per pixel, averaged over all pixels of the stage grid); ``pairing="cosine"`` keeps the random
teachers but gives each, greedily in order, the most similar remaining modality by prototype cosine
similarity (averaged over the stages). Everything is vectorised over modalities and pairs and never
synchronises with the device.

Numerics: :func:`sgm_loss` runs entirely in fp32 with autocast disabled. Under fp16 autocast the
prototype sums (``onehot.T @ flat`` over e.g. 2×256×256 stage-1 pixels at 1024² crops) overflow fp16's
65504 and make the prototypes inf and the loss NaN; the matmul would be autocast to fp16 even with fp32
inputs, so casting alone is not enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def class_prototypes(
    feats: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes of every modality over the batch (Eq. 3).

    Args:
        feats: ``P×B×C×h×w`` stage features of P modalities.
        labels: ``B×H×W`` int64 labels at any resolution; resized here to ``h×w`` (nearest).
        num_classes: K.

    Returns:
        prototypes ``P×C×K`` (zero for absent classes) and ``present``: bool ``K``.
    """
    P, B, C, h, w = feats.shape
    if labels.shape[-2:] != (h, w):
        labels = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    classes = torch.arange(num_classes, device=labels.device)
    onehot = (labels.reshape(-1, 1) == classes).to(feats.dtype)  # (B·h·w)×K; ignore rows are all 0
    counts = onehot.sum(0)  # K
    flat = feats.permute(0, 1, 3, 4, 2).reshape(P, B * h * w, C)  # P×(B·h·w)×C (a view if channels-last)
    sums = (onehot.T @ flat).transpose(1, 2)  # P×C×K
    return sums / counts.clamp_min(1), counts > 0


def prototype_kl(teacher: torch.Tensor, student: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``KL(t‖s)`` per pair over the present classes, averaged over channels.

    Args:
        teacher, student: ``M×C×K`` prototypes of M pairs (teacher already detached by the caller).
        present: bool ``K``.

    Returns:
        ``M`` KL values.
    """
    # Absent classes get a very negative finite logit: probability exactly 0 and a finite log, so the
    # masked terms are 0 with 0 gradient (an -inf mask would give NaN gradients through 0·inf).
    neg = torch.finfo(teacher.dtype).min / 4
    log_t = F.log_softmax(teacher.masked_fill(~present, neg), dim=-1)
    log_s = F.log_softmax(student.masked_fill(~present, neg), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # M×C
    return kl.mean(-1)


def pixel_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """The ``prototype=False`` ablation: KL over channels per pixel, averaged. ``M×B×C×h×w -> M``."""
    log_t = F.log_softmax(teacher, dim=2)
    log_s = F.log_softmax(student, dim=2)
    return (log_t.exp() * (log_t - log_s)).sum(2).flatten(1).mean(1)


def random_pairs(num: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle ``num`` modalities, drop the last one if odd, split into teachers and students."""
    perm = torch.randperm(num, generator=generator)
    half = num // 2
    return perm[:half], perm[half : 2 * half]


def cosine_pairs(
    protos: Sequence[torch.Tensor], present: Sequence[torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random teachers; each gets the most prototype-similar modality not yet taken (greedy, in order).

    Similarity: cosine of the flattened ``C×K_present`` prototypes, averaged over the stages.
    """
    num = protos[0].shape[0]
    sim = 0
    for p, m in zip(protos, present):
        v = F.normalize((p * m).flatten(1).detach().float(), dim=1)  # P×(C·K), absent classes zeroed
        sim = sim + v @ v.T
    perm = torch.randperm(num, generator=generator)
    half = num // 2
    teachers = perm[:half]
    sim = sim.cpu()
    taken = torch.zeros(num, dtype=torch.bool)
    taken[teachers] = True
    students = []
    for t in teachers:  # at most N/2 iterations on an N×N matrix: tiny
        row = sim[t].masked_fill(taken, float("-inf"))
        j = row.argmax()
        students.append(j)
        taken[j] = True
    return teachers, torch.stack(students)


def sgm_loss(
    feats: Sequence[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int = 255,
    prototype: bool = True,
    pairing: str = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``L_s`` of Eq. (4): Σ over stages and teacher/student pairs of the KL divergence.

    Args:
        feats: per stage, ``P×B×C×h×w`` features of the P present modalities.
        labels: ``B×H×W`` int64.
        generator: seeds the random pairing (and teacher choice); None uses torch's global RNG.

    Returns:
        fp32 scalar tensor (0 when fewer than 2 modalities). Computed in fp32 with autocast disabled
        whatever the caller's autocast state (see the module docstring); gradients flow back to the
        features in their own dtype through the casts.
    """
    if pairing not in ("random", "cosine"):
        raise ValueError(f"pairing must be 'random' or 'cosine', got {pairing!r}")
    with torch.autocast(device_type=feats[0].device.type, enabled=False):
        return _sgm_loss_fp32(
            [f.float() for f in feats], labels, num_classes, ignore_index, prototype, pairing, generator
        )


def _sgm_loss_fp32(
    feats: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    ignore_index: int,
    prototype: bool,
    pairing: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """:func:`sgm_loss` on fp32 features, called with autocast off."""
    P = feats[0].shape[0]
    if P < 2:
        return feats[0].new_zeros(())
    protos = present = None
    if prototype or pairing == "cosine":
        pp = [class_prototypes(f, labels, num_classes, ignore_index) for f in feats]
        protos, present = [p for p, _ in pp], [m for _, m in pp]
    if pairing == "cosine":
        t_idx, s_idx = cosine_pairs(protos, present, generator)
    else:
        t_idx, s_idx = random_pairs(P, generator)
    device = feats[0].device
    t_idx, s_idx = t_idx.to(device), s_idx.to(device)
    total = feats[0].new_zeros((), dtype=torch.float32)
    for i, f in enumerate(feats):
        if prototype:
            kl = prototype_kl(protos[i][t_idx].detach(), protos[i][s_idx], present[i])
        else:
            kl = pixel_kl(f[t_idx].detach(), f[s_idx])
        total = total + kl.sum()
    return total
