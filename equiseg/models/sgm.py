"""Self-Guided Module (SGM), paper §2.2 / Fig. 1(c) -- a training-only loss, under two conventions.

The paper gives Eq. (3)-(4) but not the arithmetic around them (per batch or per sample, which classes,
how the KL is reduced). Two readings are implemented (``convention=``, ``ModelConfig.sgm_convention``;
docs/reproduction.md, "The two SGM conventions", compares them):

``"spec"`` -- the literal reading of the paper's equations. For each stage ``i`` and present modality
``n`` the class prototypes of the stage features (Eq. 3) ``P_n[c] = mean_j f^j 1[l_j = c]`` are taken
over the whole batch, with the labels resized to the stage grid by nearest interpolation (ignore 255;
classes absent from the batch are left out; the sum is divided by the count once). For a pair and each
channel ``d``, ``p = softmax_c P[:, d]`` over the present classes and
``KL(t‖s) = Σ_c p_t log(p_t / p_s)``, averaged over channels. ``L_s = Σ_stages Σ_pairs KL`` (Eq. 4).

``"reference"`` -- the arithmetic of the prototype distillation in RobustSeg (the paper's ref. [17], by
three of its authors), from which the SGM takes its prototypes. Prototypes per **sample**, over **all**
K classes (absent classes are zero rows), and the class sum is divided by the count **twice** (the class
mean divided by the class's pixel count, so a class weighs 1/count²). ``log_softmax``/``softmax`` over
the class axis of the K×C prototype, the KL summed and divided by K·C (``KLDivLoss(reduction="mean")``),
clamped at 0; summed over stages, pairs and samples and divided by the batch size. Its values are about
three orders of magnitude below ``"spec"``'s on the same features, so the same λ means a far weaker
regulariser.

Both: each step the modalities are shuffled (one dropped at random when their number is odd); the first
half are teachers, the second half students, paired in order; the teacher is detached.

Ablations (paper Tab. 3): ``prototype=False`` applies the KL to pixel features (softmax over channels,
per pixel; ``"spec"``: averaged over all pixels of the stage grid; ``"reference"``: per sample the KL
summed over channels and pixels divided by C·h·w, clamped at 0, summed over samples and divided by the
batch size); ``pairing="cosine"`` keeps the random teachers but gives each, greedily in order, the most
similar remaining modality by the cosine similarity of the convention's prototypes (averaged over the
stages). Everything is vectorised over modalities, pairs, samples and classes and never synchronises
with the device.

**Kept modalities** (``keep=``, modality dropout with zero-filled inputs): a ``P×B`` mask of which
modality each sample kept. A dropped input is a zero tensor the network still encodes, but the SGM
compares only what was kept: the pairing draws its teachers and students from the modalities kept by at
least one sample of the batch, and a pair is compared only on the samples that kept *both* of its
modalities -- ``"spec"``: both prototypes are taken over those samples' pixels (so the two sides
describe the same pixels; a prototype over a different set of samples would teach the student the
difference between samples, not between sensors), classes absent from them left out; ``"reference"``:
the per-sample terms of the other samples are left out (still divided by the batch size); the pixel
ablation averages over those samples only. A pair that no sample kept whole contributes 0. With every
modality kept, the result equals the unmasked one (the same pairs from the same generator state).

Numerics: :func:`sgm_loss` runs entirely in fp32 with autocast disabled. Under fp16 autocast the
prototype sums (``onehot.T @ flat`` over e.g. 2×256×256 stage-1 pixels at 1024² crops) overflow fp16's
65504 and make the prototypes inf and the loss NaN; the matmul would be autocast to fp16 even with fp32
inputs, so casting alone is not enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

SGM_CONVENTIONS = ("spec", "reference")


def _onehot(labels: torch.Tensor, size: tuple[int, int], num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``B×(h·w)×K`` one-hot of the labels resized to ``size`` by nearest interpolation; pixels of no
    class in ``0..K-1`` (the ignore index) are all-zero rows."""
    if labels.shape[-2:] != size:
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    classes = torch.arange(num_classes, device=labels.device)
    return (labels.flatten(1)[..., None] == classes).to(dtype)


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
    onehot = _onehot(labels, (h, w), num_classes, feats.dtype).reshape(B * h * w, num_classes)
    counts = onehot.sum(0)  # K
    flat = feats.permute(0, 1, 3, 4, 2).reshape(P, B * h * w, C)  # P×(B·h·w)×C (a view if channels-last)
    sums = (onehot.T @ flat).transpose(1, 2)  # P×C×K
    return sums / counts.clamp_min(1), counts > 0


def sample_prototypes(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The ``"reference"`` convention's prototypes: per sample, all K classes, the class sum divided by
    the class's pixel count twice (absent classes: zero rows).

    Args:
        feats: ``P×B×C×h×w`` stage features of P modalities.
        labels: ``B×H×W`` int64 labels at any resolution; resized here to ``h×w`` (nearest).

    Returns:
        ``P×B×K×C``.
    """
    P, B, C, h, w = feats.shape
    onehot = _onehot(labels, (h, w), num_classes, feats.dtype)  # B×(h·w)×K
    counts = onehot.sum(1).clamp_min(1)  # B×K
    flat = feats.permute(0, 1, 3, 4, 2).reshape(P, B, h * w, C)  # P×B×(h·w)×C
    sums = onehot.transpose(1, 2) @ flat  # (B×K×hw) @ (P×B×hw×C) -> P×B×K×C
    return sums / (counts * counts)[..., None]


def reference_kl(teacher: torch.Tensor, student: torch.Tensor, dim: int) -> torch.Tensor:
    """``KLDivLoss(reduction="mean")(log_softmax(s), softmax(t))`` over everything but the two leading
    (pair, sample) axes, softmax along ``dim``, clamped at 0: ``M×B×… -> M×B``."""
    log_t = F.log_softmax(teacher, dim=dim)
    log_s = F.log_softmax(student, dim=dim)
    return (log_t.exp() * (log_t - log_s)).flatten(2).mean(2).clamp_min(0)


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
    protos: Sequence[torch.Tensor],
    present: Sequence[torch.Tensor] | None,
    generator: torch.Generator | None = None,
    candidates: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random teachers; each gets the most prototype-similar modality not yet taken (greedy, in order).

    Similarity: cosine of each modality's flattened prototypes, averaged over the stages. ``protos``:
    per stage, ``P×…`` (modality first); ``present``: per stage a bool mask of the last axis (the
    ``"spec"`` prototypes, ``P×C×K``: ``K``, or ``P×1×K`` per modality), or None when absent classes are
    already zero rows. ``candidates``: bool ``P``, the modalities that may be paired (default all);
    teachers are drawn from the same permutation as without it, candidates first, so with every
    modality a candidate the pairs are those of the default.
    """
    num = protos[0].shape[0]
    sim = 0
    for i, p in enumerate(protos):
        if present is not None:
            p = p * present[i]  # absent classes zeroed
        v = F.normalize(p.flatten(1).detach().float(), dim=1)  # P×(everything else)
        sim = sim + v @ v.T
    perm = torch.randperm(num, generator=generator)
    if candidates is None:
        candidates = torch.ones(num, dtype=torch.bool)
    candidates = candidates.cpu()
    perm = perm[torch.sort((~candidates[perm]).to(torch.uint8), stable=True).indices]  # candidates first
    half = int(candidates.sum()) // 2
    teachers = perm[:half]
    sim = sim.cpu()
    taken = ~candidates
    taken[teachers] = True
    students = []
    for t in teachers:  # at most N/2 iterations on an N×N matrix: tiny
        row = sim[t].masked_fill(taken, float("-inf"))
        j = row.argmax()
        students.append(j)
        taken[j] = True
    if not students:
        return teachers, teachers.clone()
    return teachers, torch.stack(students)


def sgm_loss(
    feats: Sequence[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int = 255,
    prototype: bool = True,
    pairing: str = "random",
    convention: str = "spec",
    generator: torch.Generator | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_s`` of Eq. (4): Σ over stages and teacher/student pairs of the KL divergence.

    Args:
        feats: per stage, ``P×B×C×h×w`` features of the P present modalities.
        labels: ``B×H×W`` int64.
        convention: ``"spec"`` or ``"reference"`` (the module docstring).
        generator: seeds the random pairing (and teacher choice); None uses torch's global RNG.
        keep: ``P×B`` bool, which modality each sample kept (modality dropout with zero-filled
            inputs): only kept features are compared (module docstring, "Kept modalities"); None: all.

    Returns:
        fp32 scalar tensor (0 when fewer than 2 modalities). Computed in fp32 with autocast disabled
        whatever the caller's autocast state (see the module docstring); gradients flow back to the
        features in their own dtype through the casts.
    """
    if pairing not in ("random", "cosine"):
        raise ValueError(f"pairing must be 'random' or 'cosine', got {pairing!r}")
    if convention not in SGM_CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(SGM_CONVENTIONS)}, got {convention!r}")
    if keep is not None and tuple(keep.shape) != tuple(feats[0].shape[:2]):
        raise ValueError(
            f"keep must be P×B {tuple(feats[0].shape[:2])} (modality × sample), got {tuple(keep.shape)}"
        )
    with torch.autocast(device_type=feats[0].device.type, enabled=False):
        fp32 = [f.float() for f in feats]
        if keep is not None:
            keep = keep.to(device=feats[0].device, dtype=torch.bool)
            return _sgm_loss_kept(fp32, labels, num_classes, prototype, pairing, convention, generator, keep)
        return _sgm_loss_fp32(fp32, labels, num_classes, prototype, pairing, convention, generator)


def _sgm_loss_fp32(
    feats: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    prototype: bool,
    pairing: str,
    convention: str,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """:func:`sgm_loss` on fp32 features, called with autocast off."""
    P = feats[0].shape[0]
    if P < 2:
        return feats[0].new_zeros(())
    reference = convention == "reference"
    protos = present = None
    if prototype or pairing == "cosine":
        if reference:
            protos = [sample_prototypes(f, labels, num_classes) for f in feats]  # P×B×K×C each
        else:
            pp = [class_prototypes(f, labels, num_classes) for f in feats]  # P×C×K, K each
            protos, present = [p for p, _ in pp], [m for _, m in pp]
    if pairing == "cosine":
        t_idx, s_idx = cosine_pairs(protos, present, generator)
    else:
        t_idx, s_idx = random_pairs(P, generator)
    device = feats[0].device
    t_idx, s_idx = t_idx.to(device), s_idx.to(device)
    total = feats[0].new_zeros((), dtype=torch.float32)
    for i, f in enumerate(feats):  # the stages: 4 tensors of different shapes
        if reference and prototype:  # M×B×K×C, softmax over the classes
            kl = reference_kl(protos[i][t_idx].detach(), protos[i][s_idx], dim=2).sum() / f.shape[1]
        elif reference:  # M×B×C×h×w, softmax over the channels
            kl = reference_kl(f[t_idx].detach(), f[s_idx], dim=2).sum() / f.shape[1]
        elif prototype:
            kl = prototype_kl(protos[i][t_idx].detach(), protos[i][s_idx], present[i]).sum()
        else:
            kl = pixel_kl(f[t_idx].detach(), f[s_idx]).sum()
        total = total + kl
    return total


def _kept_pairs(
    keep: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pairs among the modalities kept by at least one sample, without a host sync.

    The permutation is :func:`random_pairs`'s (the same draw), reordered stably so that the ``n``
    candidates come first; pair ``j`` is ``(q[j], q[j + n//2])`` for ``j < n//2`` and invalid after, so
    with every modality a candidate the pairs are :func:`random_pairs`'s. Returns teachers, students
    (``P//2`` each) and ``valid`` (bool ``P//2``)."""
    P = keep.shape[0]
    candidates = keep.any(1)  # P
    perm = torch.randperm(P, generator=generator).to(keep.device)
    q = perm[torch.sort((~candidates[perm]).to(torch.uint8), stable=True).indices]
    half = P // 2
    j = torch.arange(half, device=keep.device)
    n_half = candidates.sum() // 2
    valid = j < n_half
    return q[:half], q[(j + n_half).clamp(max=P - 1)], valid


def _sgm_loss_kept(
    feats: list[torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    prototype: bool,
    pairing: str,
    convention: str,
    generator: torch.Generator | None,
    keep: torch.Tensor,
) -> torch.Tensor:
    """:func:`sgm_loss` restricted to the kept inputs (``keep``, ``P×B``): fp32 features, autocast off.

    Per pair ``m`` the weight ``w[m, b]`` is 1 where sample ``b`` kept both modalities; every term is
    that of :func:`_sgm_loss_fp32` on the weighted samples (the module docstring, "Kept modalities")."""
    P, B = keep.shape
    total = feats[0].new_zeros((), dtype=torch.float32)
    if P < 2:
        return total
    reference = convention == "reference"
    kf = keep.float()
    sums = counts = None
    if prototype or pairing == "cosine":
        if reference:
            protos = [sample_prototypes(f, labels, num_classes) for f in feats]  # P×B×K×C each
        else:
            sums, counts = zip(*(_sample_sums(f, labels, num_classes) for f in feats))  # P×B×K×C, B×K
    if pairing == "cosine":
        if reference:  # the dropped samples' prototypes left out of the similarity
            sim_protos, sim_present = [p * kf[:, :, None, None] for p in protos], None
        else:  # each modality's prototypes over the samples that kept it
            sim_protos, sim_present = [], []
            for S, n in zip(sums, counts):
                num = kf @ n  # P×K
                sim_protos.append(torch.einsum("pb,pbkc->pck", kf, S) / num.clamp_min(1)[:, None, :])
                sim_present.append((num > 0)[:, None, :])
        t_idx, s_idx = cosine_pairs(sim_protos, sim_present, generator, candidates=keep.any(1))
        t_idx, s_idx = t_idx.to(keep.device), s_idx.to(keep.device)
        valid = torch.ones(len(t_idx), dtype=torch.bool, device=keep.device)
        if len(t_idx) == 0:
            return total
    else:
        t_idx, s_idx, valid = _kept_pairs(keep, generator)
    w = (keep[t_idx] & keep[s_idx] & valid[:, None]).float()  # M×B: samples that kept both
    for i, f in enumerate(feats):  # the stages
        if reference and prototype:  # per sample, softmax over the classes
            kl = reference_kl(protos[i][t_idx].detach(), protos[i][s_idx], dim=2)  # M×B
            kl = (kl * w).sum() / B
        elif reference:  # per sample, softmax over the channels
            kl = (reference_kl(f[t_idx].detach(), f[s_idx], dim=2) * w).sum() / B
        elif prototype:  # prototypes of each pair over the samples that kept both
            num = w @ counts[i]  # M×K pixel counts
            scale = num.clamp_min(1)[:, None, :]
            teacher = torch.einsum("mb,mbkc->mck", w, sums[i][t_idx].detach()) / scale
            student = torch.einsum("mb,mbkc->mck", w, sums[i][s_idx]) / scale
            kl = prototype_kl(teacher, student, (num > 0)[:, None, :]).sum()
        else:  # pixel KL averaged over the pixels of the samples that kept both
            log_t = F.log_softmax(f[t_idx].detach(), dim=2)
            log_s = F.log_softmax(f[s_idx], dim=2)
            per_sample = (log_t.exp() * (log_t - log_s)).sum(2).flatten(2).mean(2)  # M×B
            kl = ((per_sample * w).sum(1) / w.sum(1).clamp_min(1)).sum()
        total = total + kl
    return total


def _sample_sums(
    feats: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample class sums ``P×B×K×C`` of the stage features and pixel counts ``B×K`` (labels
    nearest-resized to the stage grid): the parts of :func:`class_prototypes` before the batch sum."""
    P, B, C, h, w = feats.shape
    onehot = _onehot(labels, (h, w), num_classes, feats.dtype)  # B×(h·w)×K
    flat = feats.permute(0, 1, 3, 4, 2).reshape(P, B, h * w, C)
    return onehot.transpose(1, 2) @ flat, onehot.sum(1)
