"""``equiseg robustness``: the robustness benchmark (docs/design.md §6) of a trained checkpoint on a split
of the config's data set, with its report (tables, charts, ``report.md`` and the self-contained ``report.html``).

The benchmark itself is :func:`equiseg.robustness.run_benchmark`; this module only loads the
checkpoint and the val-transformed split (batch 1, as the protocol requires) and writes the outputs.
Every variant is predicted as ``equiseg eval`` predicts under the same config (``eval.mode`` whole or
slide, ``eval.scales``, ``eval.flip``, ``eval.align``), so the clean mIoU is ``eval``'s; the outputs
record it (``inference``).

The network runs in ``eval.precision`` (:mod:`equiseg.engine.precision`): for bf16 the model handed to
the benchmark is an :class:`~equiseg.engine.precision.AutocastModel`, whose forward alone runs under
autocast and returns fp32 logits, so the corruptions and the metrics stay fp32. The result records
``precision`` and ``precision_note``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from equiseg.engine.metrics import Convention


def run_robustness(
    config: Any,
    checkpoint: str | Path,
    overrides: Iterable[str] = (),
    *,
    tests: Sequence[str] | str = ("emm", "rmm", "nm"),
    out_dir: str | Path | None = None,
    seed: int = 0,
    split: str | None = None,
    max_samples: int | None = None,
    model_aware_missing: bool = False,
    variant_batch_size: int = 4,
    rmm_rates: Sequence[float] = (0.25, 0.5, 0.75),
    convention: Convention | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark ``checkpoint`` and (with ``out_dir``) write ``robustness.json``, ``robustness.md``,
    ``robustness_missing.png``, ``robustness_noise.png``, ``report.md`` and ``report.html``.

    Args:
        config: An :class:`~equiseg.config.ExperimentConfig`, a YAML path or a dict.
        checkpoint: A training checkpoint.
        overrides: Dotted ``a.b=c`` config overrides.
        tests: Subset of ``("emm", "rmm", "nm")`` (or ``"emm,nm"``).
        out_dir: Where the outputs go; None: nothing is written.
        seed: Seed of the random corruptions.
        split: Default ``data.val_split``.
        max_samples: Use only the first ``max_samples`` samples (quick checks; not the protocol).
        model_aware_missing: Also evaluate EMM with ``None`` inputs (reported separately).
        variant_batch_size: Corruption variants per forward call. 4 (default): the batch shape of the
            reference protocol's loop (batch 4), whose numbers it reproduced exactly on the demo model
            (benchmarks/robustness_speed.py), and as fast as 8 on a 2-core CPU; 1 differs from it in
            the last digits (other kernels for 1-3 rows).
        rmm_rates: RMM drop rates.
        convention: mIoU convention; default the config's ``eval.convention``.
        progress: Show a progress bar.

    Returns:
        The benchmark result (see :func:`~equiseg.robustness.run_benchmark`) plus ``split``,
        ``checkpoint``, ``inference`` (how every variant was predicted), ``precision`` (``"fp32"`` /
        ``"bf16"``: what ``eval.precision`` resolved to),
        ``precision_note`` and, with ``out_dir``, ``report`` (the path of ``report.md``).
    """
    from equiseg.engine.eval_setup import load_eval_setup
    from equiseg.engine.inference import forward_crop
    from equiseg.engine.precision import describe_precision, resolve_precision, with_precision
    from equiseg.reports.robustness import write_robustness_report
    from equiseg.robustness import run_benchmark

    if out_dir is not None:  # a read-only or unusable folder is found now, not after the benchmark
        from equiseg.utils import check_writable_dir

        check_writable_dir(out_dir, "--out")
    setup = load_eval_setup(config, checkpoint, overrides, split=split, max_samples=max_samples)
    precision = resolve_precision(
        setup.cfg.eval.precision,
        setup.device,
        model=setup.model,
        data=setup.dataset,
        crop=forward_crop(setup.cfg.eval),
    )
    result = run_benchmark(
        with_precision(setup.model, precision, setup.device),
        setup.dataset,
        tests=tests,
        rmm_rates=rmm_rates,
        seed=seed,
        convention=convention or setup.cfg.eval.convention,
        device=setup.device,
        progress=progress,
        modality_names=list(setup.cfg.data.modalities),
        class_names=list(setup.model.meta.get("classes", [])) or None,
        ignore_index=int(setup.model.meta.get("ignore_index", 255)),
        model_aware_missing=model_aware_missing,
        variant_batch_size=variant_batch_size,
        model_name=setup.name,
        eval_cfg=setup.cfg.eval,
        split=setup.split,
    )
    result["checkpoint"] = str(checkpoint)
    result["precision"] = precision
    result["precision_note"] = describe_precision(precision, setup.cfg.eval.precision, setup.device)
    if out_dir is not None:
        title = f"Robustness of {setup.name} on {setup.cfg.data.dataset}, {setup.split} split"
        result["report"] = str(write_robustness_report(result, out_dir, title=title, model_name=setup.name))
    return result
