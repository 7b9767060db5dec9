"""The corruption variants of the robustness benchmark (docs/design.md §6): which variants a run
evaluates (:func:`build_variants`), the inputs of one (:func:`corrupt_inputs`), which variants are the
same computation, and how they are grouped into forward calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from equiseg.utils import check_names

from .corruptions import apply_emm, apply_nm, apply_rmm, missing_sets, variant_generator

TESTS: tuple[str, ...] = ("emm", "rmm", "nm")
Inputs = list[torch.Tensor | None]
Model = Callable[[Inputs], torch.Tensor]


@dataclass(frozen=True)
class Variant:
    """One corruption of a sample's inputs.

    Attributes:
        test: ``"clean"``, ``"emm"``, ``"rmm"``, ``"nm"`` or ``"emm_none"`` (EMM with ``None`` inputs).
        missing: Indices of the missing modalities (EMM, RMM, model-aware EMM).
        rate: RMM drop rate.
        level: NM level name.
    """

    test: str
    missing: tuple[int, ...] = ()
    rate: float | None = None
    level: str | None = None

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``"rmm/r=0.5/missing=0,2"``; it seeds the variant's generator, so it
        depends only on the variant itself (not on which other variants run, nor on their order)."""
        if self.test == "clean":
            return "clean"
        if self.test == "nm":
            return f"nm/{self.level}"
        miss = ",".join(map(str, self.missing))
        if self.test == "rmm":
            return f"rmm/r={self.rate:g}/missing={miss}"
        return f"{self.test}/missing={miss}"

    @property
    def model_aware(self) -> bool:
        """Whether missing modalities are passed as ``None`` (so the variant cannot be batched)."""
        return self.test == "emm_none"


def build_variants(
    num_modalities: int,
    tests: Sequence[str] = TESTS,
    rmm_rates: Sequence[float] = (0.25, 0.5, 0.75),
    nm_levels: Sequence[str] = ("low", "mid", "high"),
    model_aware_missing: bool = False,
) -> list[Variant]:
    """Every distinct variant to evaluate: clean first, then EMM, RMM (per rate), NM, model-aware EMM.

    The "none missing" combination of EMM/RMM/model-aware EMM is the clean variant and is not repeated.
    """
    sets = missing_sets(num_modalities)[1:]  # [0] is () == clean
    variants = [Variant("clean")]
    if "emm" in tests:
        variants += [Variant("emm", m) for m in sets]
    if "rmm" in tests:
        variants += [Variant("rmm", m, rate=float(r)) for r in rmm_rates for m in sets]
    if "nm" in tests:
        variants += [Variant("nm", level=lvl) for lvl in nm_levels]
    if model_aware_missing:
        variants += [Variant("emm_none", m) for m in sets]
    return variants


def corrupt_inputs(
    variant: Variant,
    inputs: Sequence[torch.Tensor],
    *,
    seed: int,
    sample_index: int,
    event_index: int | None = None,
) -> Inputs:
    """The inputs of ``variant`` for one sample (``N`` tensors ``1×C_i×H×W``, normalised).

    Random variants draw from :func:`~equiseg.robustness.corruptions.variant_generator` keyed by
    ``(seed, sample_index, variant.key)`` on the inputs' device. Unchanged modalities are the same
    tensor objects as in ``inputs`` (no copy).
    """
    if variant.test == "clean":
        return list(inputs)
    if variant.test in ("emm", "emm_none"):
        return apply_emm(inputs, variant.missing, model_aware=variant.model_aware)
    gen = variant_generator(seed, sample_index, variant.key, device=inputs[0].device)
    if variant.test == "rmm":
        return list(apply_rmm(inputs, variant.missing, float(variant.rate), gen))
    if variant.test == "nm":
        return list(apply_nm(inputs, str(variant.level), gen, event_index))
    raise ValueError(f"unknown variant test {variant.test!r}")


def _check_tests(tests: Sequence[str] | str) -> tuple[str, ...]:
    """The tests asked for, in canonical order (:func:`equiseg.utils.check_names`; a string is split at
    commas). Empty is allowed here: the clean pass alone."""
    if isinstance(tests, str):
        tests = [t.strip() for t in tests.split(",") if t.strip()]
    tests = check_names(
        [t.lower() for t in tests], TESTS, what="robustness test", where="tests", allow_empty=True
    )
    return tuple(t for t in TESTS if t in tests)  # canonical order, no duplicates


def _canonical(variant: Variant) -> Variant:
    """The variant whose inputs ``variant``'s equal bit for bit by construction (itself if none).

    RMM at rate 0 keeps every element (``u < 0`` never holds): the clean inputs. RMM at rate 1 zeroes
    every element of the missing modalities (``u < 1`` always holds): EMM's zero fill. The generator's
    draws do not matter in either case.
    """
    if variant.test == "rmm" and variant.rate == 0.0:
        return Variant("clean")
    if variant.test == "rmm" and variant.rate == 1.0:
        return Variant("emm", variant.missing)
    return variant


def _chunks(items: Sequence[Variant], size: int) -> list[list[Variant]]:
    """``items`` in order, split into ``ceil(len / size)`` consecutive chunks of near-equal length."""
    if not items:
        return []
    k = -(-len(items) // size)
    bounds = [i * len(items) // k for i in range(k + 1)]
    return [list(items[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
