"""Sensor-failure corruptions of the robustness benchmark (docs/design.md §6.1; Liao et al., CVPR-W 2025,
arXiv 2503.18445).

Every corruption acts on the *normalised* input tensors, exactly as the model receives them:

- **EMM** (entire-missing modality): a missing modality's tensor is replaced by zeros (for a
  mean/std-normalised image this is the data set's mean colour). With ``model_aware=True`` the slot is
  ``None`` instead, which models such as EQUISeg handle natively -- that is *not* the protocol and is
  reported separately.
- **RMM** (random-missing modality): each element of each "missing" modality (``C×H×W``, channels
  independent) is set to 0 with probability ``r``.
- **NM** (noisy modality): salt-and-pepper noise on every modality, then additive Gaussian noise on
  every modality except the event camera (whose images are sparse counts).

Randomness is drawn from an explicit :class:`torch.Generator`; :func:`variant_generator` derives one
per ``(seed, sample index, variant)`` so that the numbers do not depend on evaluation order, on which
other tests run, or on torch's global RNG. Generators live on the device of the tensors: the same seed
gives identical numbers on the same device type (CPU and CUDA draw different streams).

Functions accept one sample ``C×H×W`` or a batch ``B×C×H×W``; per-sample statistics (the
salt-and-pepper extremes) are taken per batch element.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

EVENT_NAMES: tuple[str, ...] = ("event", "event_camera")


@dataclass(frozen=True)
class NoiseLevel:
    """One NM level: salt-and-pepper density (fraction of elements hit) and Gaussian std."""

    name: str
    salt_pepper: float
    gaussian_std: float


NM_LEVELS: dict[str, NoiseLevel] = {
    "low": NoiseLevel("low", 0.05, 0.1),
    "mid": NoiseLevel("mid", 0.10, 0.2),
    "high": NoiseLevel("high", 0.20, 0.5),
}


def missing_sets(num_modalities: int) -> list[tuple[int, ...]]:
    """Every set of missing modality indices of size ``0 .. N-1`` (never all missing).

    Ordered by size, then lexicographically: for N = 3 ``(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2)``.
    There are ``2^N - 1`` of them, one per non-empty set of present modalities.
    """
    if num_modalities < 1:
        raise ValueError(f"need at least one modality, got {num_modalities}")
    idx = range(num_modalities)
    return [c for k in range(num_modalities) for c in itertools.combinations(idx, k)]


def find_event_index(modality_names: Sequence[str] | None) -> int | None:
    """Index of the event-camera modality (name ``event`` or ``event_camera``), or ``None``."""
    if modality_names is None:
        return None
    hits = [i for i, name in enumerate(modality_names) if name.lower() in EVENT_NAMES]
    if len(hits) > 1:
        raise ValueError(f"more than one event modality in {list(modality_names)}; pass event_index")
    return hits[0] if hits else None


def variant_generator(
    seed: int, sample_index: int, variant_id: str, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator seeded from ``(seed, sample_index, variant_id)`` by a stable hash (BLAKE2b).

    Python's ``hash`` is salted per process, so it is not used; the 63-bit seed is the same in every
    process and on every platform.
    """
    key = f"{int(seed)}|{int(sample_index)}|{variant_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


# ---------------------------------------------------------------------------------------------------
# element-wise corruptions of one tensor


def random_drop(x: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set each element of ``x`` to 0 independently with probability ``rate`` (RMM).

    Args:
        x: ``C×H×W`` or ``B×C×H×W`` normalised tensor; channels are dropped independently.
        rate: Drop probability ``r`` in ``[0, 1]``.
        generator: Source of randomness, on ``x``'s device.

    Returns:
        A new tensor; ``x`` is not modified.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"drop rate must be in [0, 1], got {rate}")
    # uniforms in fp32 whatever x's dtype, so that the rate is exact for half-precision inputs too
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return x.masked_fill(u < rate, 0.0)


def salt_and_pepper(
    x: torch.Tensor, density: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Salt-and-pepper noise: ``density·M`` hits over the ``M = C·H·W`` elements of each sample.

    Half of the hits are set to the sample's maximum, half to its minimum (the extremes of the clean
    tensor, per sample); positions are uniform *with replacement* (``ceil(density·M/2)`` draws each,
    as scikit-image counts them), so a few hits coincide and the fraction of elements changed is
    ``≈ 1 - exp(-density)`` (0.0488 / 0.0952 / 0.1813 for 0.05 / 0.10 / 0.20). Where a salt and a
    pepper position coincide the pepper wins.

    Args:
        x: ``C×H×W`` or ``B×C×H×W`` normalised tensor.
        density: Fraction of elements hit, in ``[0, 1]``.
        generator: Source of randomness, on ``x``'s device.

    Returns:
        A new tensor; ``x`` is not modified.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"salt-and-pepper density must be in [0, 1], got {density}")
    single = x.ndim == 3
    xb = x.unsqueeze(0) if single else x
    b = xb.shape[0]
    flat = xb.reshape(b, -1).clone()  # B×M
    m = flat.shape[1]
    n = math.ceil(density * m / 2)
    if n > 0 and m > 0:
        hi = flat.amax(dim=1, keepdim=True).expand(b, n)
        lo = flat.amin(dim=1, keepdim=True).expand(b, n)
        salt = torch.randint(m, (b, n), generator=generator, device=x.device)
        pepper = torch.randint(m, (b, n), generator=generator, device=x.device)
        flat.scatter_(1, salt, hi)
        flat.scatter_(1, pepper, lo)
    out = flat.view_as(xb)
    return out.squeeze(0) if single else out


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + std·N(0, 1)``, element-wise (drawn in fp32, cast to ``x``'s dtype).

    Args:
        x: Any-shaped normalised tensor.
        std: Standard deviation of the noise (in normalised units), ``>= 0``.
        generator: Source of randomness, on ``x``'s device.
    """
    if std < 0:
        raise ValueError(f"Gaussian std must be >= 0, got {std}")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return x + (std * noise).to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# corruptions of one sample's list of modalities


def apply_emm(
    inputs: Sequence[torch.Tensor], missing: Sequence[int], model_aware: bool = False
) -> list[torch.Tensor | None]:
    """Entire-missing: the modalities in ``missing`` become zeros (or ``None`` if ``model_aware``).

    Present modalities are passed through as the *same* tensor objects (no copy).
    """
    drop = set(missing)
    if model_aware:
        return [None if i in drop else x for i, x in enumerate(inputs)]
    return [torch.zeros_like(x) if i in drop else x for i, x in enumerate(inputs)]


def apply_rmm(
    inputs: Sequence[torch.Tensor],
    missing: Sequence[int],
    rate: float,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Random-missing: each element of each modality in ``missing`` is zeroed with probability ``rate``.

    Masks are drawn modality by modality in index order from ``generator``.
    """
    drop = set(missing)
    return [random_drop(x, rate, generator) if i in drop else x for i, x in enumerate(inputs)]


def apply_nm(
    inputs: Sequence[torch.Tensor],
    level: NoiseLevel | str,
    generator: torch.Generator | None = None,
    event_index: int | None = None,
) -> list[torch.Tensor]:
    """Noisy modality: salt-and-pepper on every modality, then Gaussian noise on all but the event one.

    For each modality in index order: salt-and-pepper positions, then (unless it is ``event_index``)
    the Gaussian noise, all from ``generator``.
    """
    lvl = resolve_level(level)
    out = []
    for i, x in enumerate(inputs):
        y = salt_and_pepper(x, lvl.salt_pepper, generator)
        if i != event_index:
            y = gaussian_noise(y, lvl.gaussian_std, generator)
        out.append(y)
    return out


def resolve_level(level: NoiseLevel | str) -> NoiseLevel:
    """Look an NM level up by name (``low``, ``mid``, ``high``); a :class:`NoiseLevel` passes through."""
    if isinstance(level, NoiseLevel):
        return level
    try:
        return NM_LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown noise level {level!r}; choose from {tuple(NM_LEVELS)}") from None
