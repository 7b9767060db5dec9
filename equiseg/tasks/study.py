"""``equiseg study``: the paper's claims under seeds -- every row of Tab. 2 and Tab. 3
and the Tab. 1 peers, each over several seeds, from scratch and/or from a pretrained init; mean ± std
and, per row, the paired difference to the full model with a 95 % interval over seeds.

It reuses the two runners, it does not fork them: Tab. 1 is :func:`~equiseg.tasks.compare.run_compare`
(all seeds at once), Tab. 2/3 are :func:`~equiseg.tasks.ablate.run_ablation` once per seed
(``train.seed=k``). Everything they write stays in place, one folder per run, and finished runs are
reused, so an interrupted study continues where it stopped:

    OUT/<init>/tab1/<model>/seed<k>/          (compare)
    OUT/<init>/<tab2|tab3>/seed<k>/<row>/     (ablate)
    OUT/study.json, study.md, report.html, study_<init>_<table>.png

**Inits.** ``scratch``: the config as it is. ``synth``: the ImageNet stand-in of :mod:`.pretrain`,
made once into ``OUT/mit_<variant>_synth.pth``; any other value is the path of MiT weights. A
pretrained init also gets the paper's recipe, :data:`PRETRAINED_RECIPE` (lr 6e-5, λ = 60), which is what
the stand-in exists to mimic.

**Statistics.** Per row and metric: the mean and the sample std over seeds. The paired difference to the
full model (Tab. 1: ``equiseg_*``; Tab. 2/3: the table's first row, the paper's full model) is taken
seed by seed, ``d_k = row_k − full_k`` (the same seed means the same initialisation and sample order
for both), and reported as mean ± the half-width ``t_{0.975, n−1} · sd(d) / sqrt(n)`` of a 95 % Student-t
interval; with one seed there is no interval.

``--quick`` uses the ablation runner's short schedule and val subset for every table (so Tab. 1 and
Tab. 2/3 share one schedule); ``--schedule standard`` the converged one of the demo setting
(:data:`equiseg.tasks.ablate.STANDARD_OVERRIDES`, every val sample).

**Across sittings.** With ``--records DIR`` (e.g. ``docs/results/<study>``) every finished run also leaves
its small record in ``DIR`` (:mod:`.records`: config, log, metrics, robustness and analysis JSON, no
checkpoints), and a run whose resolved config matches a record is taken from it instead of trained:
commit the records as they land, and the same command in a later session continues the study.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.utils import check_names, to_jsonable

from .ablate import TABLES, config_line, resolve_schedule

__all__ = [
    "CLAIMS",
    "PRETRAINED_RECIPE",
    "TAB1_MODELS",
    "evaluate_claims",
    "paired_difference",
    "render_study",
    "run_study",
    "study_markdown",
    "t_quantile",
]

TAB1_MODELS = (
    "equiseg_b0",
    "segformer_b0",
    "cmnext_b0",
    "cmx_b0",
    "stitchfusion_b0",
    "magic_b0",
    "magicpp_b0",
)
# The paper's recipe from ImageNet weights (docs/design.md §3): lr 6e-5 and λ = 60 (Tab. 2/3 rows force
# λ = 60 anyway).
PRETRAINED_RECIPE = ("train.lr=6e-5", "model.lambda_sgm=60")
METRICS = {
    "tab1": ("clean", "emm_avg", "mean"),
    "tab2": ("mIoU", "emm_avg"),
    "tab3": ("mIoU", "emm_avg"),
    "sgm_convention": ("mIoU", "emm_avg"),
    "sgm_features": ("mIoU", "emm_avg"),
    "modality_dropout": ("mIoU", "emm_avg"),
}
LABELS = {"clean": "mIoU", "mIoU": "mIoU", "emm_avg": "EMM Avg", "mean": "Mean"}
# two-sided 95 % Student-t quantiles t_{0.975, df}, df = 1 ... 30 (beyond: the normal 1.96)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """``t_{0.975, df}`` (two-sided 95 %)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_difference(row: Sequence[float], full: Sequence[float]) -> dict[str, Any]:
    """Mean of ``row_k − full_k`` over seeds and its 95 % t-interval half-width (None for one seed)."""
    if len(row) != len(full) or not row:
        raise ValueError(f"paired values need the same seeds, got {len(row)} and {len(full)}")
    d = [a - b for a, b in zip(row, full, strict=True)]
    mean = statistics.fmean(d)
    if len(d) == 1:
        return {"mean": mean, "half_width": None, "low": None, "high": None, "n": 1}
    hw = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return {"mean": mean, "half_width": hw, "low": mean - hw, "high": mean + hw, "n": len(d)}


# The paper's claims as directions of paired differences (row − full model, seed by seed): ``(table,
# row, metric, sign, claim)``; sign "-" = the paper has the row below the full model, "+" above. Tab. 1's
# full model is EQUISeg and its rows the peers, so "EQUISeg scores highest" is "every peer − EQUISeg < 0".
CLAIMS: tuple[tuple[str, str, str, str, str], ...] = (
    *(
        ("tab1", peer, metric, "-", f"EQUISeg's {what} is above {peer}'s (Tab. 1)")
        for metric, what in (("mean", "robustness score"), ("emm_avg", "EMM (Avg)"))
        for peer in TAB1_MODELS[1:]
    ),
    (
        "tab1",
        "stitchfusion_b0",
        "clean",
        "+",
        "StitchFusion's clean mIoU is (slightly) above EQUISeg's (Tab. 1)",
    ),
    *(
        ("tab2", row, metric, "-", f"{what} lowers {label} (Tab. 2)")
        for row, what in (
            ("hub_mean", "the mean instead of the Self-Query Hub"),
            ("no_cross_attention", "dropping cross-attention"),
            ("no_add", "dropping the residual add"),
        )
        for metric, label in (("mIoU", "mIoU"), ("emm_avg", "EMM (Avg)"))
    ),
    ("tab3", "no_sgm", "emm_avg", "-", "without SGM, EMM (Avg) drops (Tab. 3)"),
    (
        "tab3",
        "no_sgm",
        "sim_event",
        "-",
        "without SGM, event's similarity to the fused feature drops (Tab. 3)",
    ),
    (
        "tab3",
        "no_sgm",
        "sim_lidar",
        "-",
        "without SGM, LiDAR's similarity to the fused feature drops (Tab. 3)",
    ),
    ("tab3", "no_prototype", "emm_avg", "-", "without prototypes, EMM (Avg) drops (Tab. 3)"),
    ("tab3", "no_prototype", "sim_event", "-", "without prototypes, event's similarity drops (Tab. 3)"),
    ("tab3", "no_prototype", "sim_lidar", "-", "without prototypes, LiDAR's similarity drops (Tab. 3)"),
    ("tab3", "cosine_pairing", "emm_avg", "-", "cosine instead of random pairing lowers EMM (Avg) (Tab. 3)"),
    ("tab3", "lambda1", "emm_avg", "-", "λ = 1 gives a lower EMM (Avg) than λ = 60 (Tab. 3)"),
    ("tab3", "lambda40", "emm_avg", "-", "λ = 40 gives a lower EMM (Avg) than λ = 60 (Tab. 3)"),
    ("tab3", "lambda80", "emm_avg", "-", "λ = 80 gives a lower EMM (Avg) than λ = 60 (Tab. 3)"),
    ("tab3", "lambda1", "sim_event", "-", "λ = 1 lowers event's similarity (under-regularised) (Tab. 3)"),
    ("tab3", "lambda80", "sim_event", "+", "λ = 80 raises event's similarity (Tab. 3)"),
    ("tab3", "lambda80", "sim_rgb", "-", "λ = 80 lowers RGB's similarity (Tab. 3)"),
)


def _verdict(diff: Mapping[str, Any], sign: str) -> str:
    """``reproduced`` when the 95 % interval of the paired difference lies on the paper's side of 0,
    ``reversed`` when it lies on the other side, ``not resolved`` when it contains 0."""
    if diff.get("half_width") is None:
        return "one seed: no interval"
    low, high = diff["low"], diff["high"]
    if (sign == "-" and high < 0) or (sign == "+" and low > 0):
        return "reproduced"
    if (sign == "-" and low > 0) or (sign == "+" and high < 0):
        return "reversed"
    return "not resolved"


def evaluate_claims(sections: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each of :data:`CLAIMS` that the study's sections measured, per init: the paired difference
    (mean, 95 % interval) and the verdict of :func:`_verdict`."""
    out = []
    for sec in sections:
        for table, row, metric, sign, claim in CLAIMS:
            stat = sec["rows"].get(row, {}).get(metric) if sec["table"] == table else None
            if stat is None:
                continue
            d = stat["vs_full"]
            out.append({"init": sec["init"], "table": table, "row": row, "metric": metric, "sign": sign,
                        "claim": claim, "diff": d, "verdict": _verdict(d, sign)})  # fmt: skip
    return out


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "values": list(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def _init_overrides(init: str, out: Path, base: ExperimentConfig, quick: bool, progress: bool) -> list[str]:
    if init == "scratch":
        return []
    path = Path(init)
    if init == "synth":
        from .pretrain import run_pretrain

        variant = base.model["name"].rsplit("_", 1)[-1]
        path = out / f"mit_{variant}_synth.pth"
        if not path.is_file():
            run_pretrain(
                path, variant=variant, modalities=base.data.modalities, quick=quick, progress=progress
            )
    elif not path.is_file():
        raise FileNotFoundError(f"--init {init}: expected 'scratch', 'synth' or the path of MiT weights")
    return [f"model.pretrained={path}", *PRETRAINED_RECIPE]


def check_study_lists(
    tables: Sequence[str],
    models: Sequence[str],
    inits: Sequence[str],
    only: Sequence[str] | None,
    seeds: Sequence[int],
) -> tuple[list[str], list[str], list[str], list[str] | None, list[int]]:
    """Every list a study takes, checked before its first run (as ``compare`` and ``ablate`` check
    theirs, with :func:`equiseg.utils.check_names`): the tables, Tab. 1's models (registered names),
    the inits (``scratch``, ``synth`` or an existing file of MiT weights), ``only`` (row ids of the
    chosen ablation tables or models of Tab. 1) and the seeds; empty lists are refused. Returns them
    without repeats."""
    from equiseg.models import list_models

    from .ablate import table_rows

    tables = check_names(tables, ("tab1", *TABLES), what="study table", where="--rows")
    models = check_names(models, list_models(), what="model", where="--models")
    inits = list(dict.fromkeys(str(i) for i in inits))
    if not inits:
        raise ValueError("--init: no init given; choose from scratch, synth or the path of MiT weights")
    for init in inits:
        if init not in ("scratch", "synth") and not Path(init).is_file():
            raise FileNotFoundError(f"--init {init}: expected 'scratch', 'synth' or the path of MiT weights")
    if only is not None:
        known = [*(models if "tab1" in tables else ()),
                 *(r.id for t in tables if t != "tab1" for r in table_rows(t))]  # fmt: skip
        only = check_names(only, known, what=f"row or model of {', '.join(tables)}", where="--only")
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("--seeds: no seed given; at least one training seed is needed")
    return tables, models, inits, only, seeds


def run_study(
    config: ExperimentConfig | str | Path | dict[str, Any],
    tables: Sequence[str] = ("tab1", "tab2", "tab3"),
    overrides: Iterable[str] = (),
    *,
    seeds: Sequence[int] = (1, 2, 3),
    inits: Sequence[str] = ("scratch", "synth"),
    only: Sequence[str] | None = None,
    models: Sequence[str] = TAB1_MODELS,
    out_dir: str | Path = "runs/study",
    quick: bool = False,
    schedule: str | None = None,
    max_samples: int | None = None,
    records: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study and write ``study.json`` / ``study.md`` / ``report.html`` / charts; returns the JSON
    content.

    Args:
        tables: any of ``tab1`` (the peers), ``tab2`` (CMTB ablation), ``tab3`` (SGM ablation),
            ``sgm_convention``, ``sgm_features`` (the SGM's conventions / feature readings) and
            ``modality_dropout`` (training on random modality subsets); the last three are not in the
            paper.
        seeds: training seeds (each row once per seed).
        inits: ``scratch``, ``synth`` (the stand-in, made once) and/or paths of MiT weights.
        only: restrict to these row ids / model names (the full model is always kept: the differences
            need it); each must be a row of a chosen table or one of ``models``.
        models: Tab. 1's models; the first is the full model the others are paired with.
        quick: the short schedule and val subset of ``ablate --quick`` for every table (the same as
            ``schedule="quick"``).
        schedule: ``"quick"`` or ``"standard"`` (:data:`equiseg.tasks.ablate.SCHEDULES`) for every
            table; None: the config's own schedule.
        records: A record tree (:mod:`.records`; e.g. ``docs/results/<study>``): every finished run
            leaves its small record there, at the same relative path as its folder under ``out_dir``,
            and a run whose resolved config matches a record anywhere in the tree is taken from it
            instead of being trained -- a study is finished over several sittings by re-running it.

    Raises:
        ValueError / FileNotFoundError: before the first run, for an empty list or an unknown table,
            model, row, init or a missing weights file (:func:`check_study_lists`).
    """
    from .ablate import run_ablation, table_rows
    from .compare import run_compare

    t0 = time.perf_counter()
    tables, models, inits, only, seeds = check_study_lists(tables, models, inits, only, seeds)
    out = Path(out_dir)
    sched = resolve_schedule(schedule, quick)
    user = [*(sched.overrides if sched else ()), *overrides]
    if sched is not None and max_samples is None:
        max_samples = sched.max_samples
    rec_root = Path(records) if records is not None else None
    rec_roots = [rec_root] if rec_root is not None else []

    def rec_dir(*parts: str) -> Path | None:
        return None if rec_root is None else rec_root.joinpath(*parts)

    base = load_experiment(config, user)
    out.mkdir(parents=True, exist_ok=True)
    sections: list[dict[str, Any]] = []
    for init in inits:
        init_over = _init_overrides(init, out, base, sched is not None and sched.name == "quick", progress)
        tag = "scratch" if init == "scratch" else ("synth" if init == "synth" else Path(init).stem)
        for table in tables:
            where = out / tag / table
            rows: dict[str, dict[str, list[float]]] = {}
            if table == "tab1":
                chosen = [m for m in models if only is None or m in only or m == models[0]]
                r = run_compare(config, chosen, [*user, *init_over], seeds=seeds, out_dir=where,
                                max_samples=max_samples, records=rec_dir(tag, table), record_roots=rec_roots,
                                progress=progress)  # fmt: skip
                for name, m in r["models"].items():
                    rows[name] = {k: [run["summary"][k] for run in m["runs"]] for k in METRICS["tab1"]}
                full, scored = models[0], (r["num_samples"], r["split"], r["inference"])
            else:
                ids = [row.id for row in table_rows(table)]
                chosen = [i for i in ids if only is None or i in only or i == ids[0]]
                for seed in seeds:
                    # the first rows of Tab. 2, Tab. 3 and sgm_features are one model: train it once
                    others = [out / tag / t / f"seed{seed}" for t in tables if t not in ("tab1", table)]
                    r = run_ablation(config, table, [*user, *init_over, f"train.seed={seed}"],
                                     out_dir=where / f"seed{seed}", rows=chosen, max_samples=max_samples,
                                     resume=True, reuse_from=others, records=rec_dir(tag, table, f"seed{seed}"),
                                     record_roots=rec_roots, progress=progress)  # fmt: skip
                    for rec in r["rows"]:
                        vals = rows.setdefault(rec["id"], {k: [] for k in METRICS[table]})
                        for k in METRICS[table]:
                            vals[k].append(rec[k])
                        if table != "tab2":  # the SGM tables: per-modality similarities
                            for mod, v in rec["similarity"].items():
                                vals.setdefault(f"sim_{mod}", []).append(v)
                full, scored = ids[0], (r["num_eval_samples"], r["split"], r["inference"])
            section = {"init": tag, "table": table, "full": full, "rows": {}}
            section["num_samples"], section["split"], section["inference"] = scored
            for name, vals in rows.items():
                section["rows"][name] = {
                    k: {**_spread(v), "vs_full": paired_difference(v, rows[full][k])} for k, v in vals.items()
                }
            sections.append(section)
            _chart(section, out / _chart_name(section))

    result = {
        "config": str(config) if isinstance(config, (str, Path)) else None,
        "overrides": list(overrides),
        "quick": sched is not None and sched.name == "quick",
        "schedule": sched.name if sched else None,
        "records": None if rec_root is None else str(rec_root),
        "seeds": seeds,
        "inits": list(inits),
        "tables": list(tables),
        "recipe_for_pretrained_inits": list(PRETRAINED_RECIPE),
        "sections": sections,
        "claims": evaluate_claims(sections),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    files = {"json": out / "study.json", "markdown": out / "study.md", "html": out / "report.html"}
    result["files"] = {k: str(v) for k, v in files.items()}
    _write_reports(result, out)
    files["json"].write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    return result


def _chart_name(section: Mapping[str, Any]) -> str:
    """File name of a section's chart, beside ``study.md``: ``study_<init>_<table>.png``."""
    return f"study_{section['init']}_{section['table']}.png"


def _write_reports(result: Mapping[str, Any], out: Path) -> None:
    """``study.md`` and the self-contained ``report.html`` (the same content, charts embedded)."""
    from equiseg.reports.html import write_html

    text = study_markdown(result)
    (out / "study.md").write_text(text)
    write_html(text, out / "report.html")


def render_study(path: str | Path) -> dict[str, Any]:
    """Rewrite ``study.md``, ``report.html``, the charts (and the ``claims`` of ``study.json``) from an
    existing ``study.json``, with this version's claims and layout -- no run is repeated. Returns the
    updated content."""
    path = Path(path)
    result = json.loads(path.read_text())
    result["claims"] = evaluate_claims(result["sections"])
    for section in result["sections"]:
        _chart(section, path.parent / _chart_name(section))
    _write_reports(result, path.parent)
    path.write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    return result


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _cell(stat: Mapping[str, Any], is_full: bool) -> str:
    text = _fmt(stat["mean"]) + ("" if stat["std"] is None else f" ± {_fmt(stat['std'])}")
    if is_full:
        return text
    d = stat["vs_full"]
    ci = "" if d["half_width"] is None else f" ± {_fmt(d['half_width'])}"
    return f"{text} (Δ {d['mean']:+.2f}{ci})"


def _scored_line(section: Mapping[str, Any]) -> list[str]:
    """``["Scored on 16 samples of the val split, whole image, scale 1.", ""]`` (nothing for a section
    of an older ``study.json`` that did not record it)."""
    from equiseg.engine.inference import describe_inference

    n = section.get("num_samples")
    if n is None:
        return []
    where = f"{n} sample{'' if n == 1 else 's'} of the {section.get('split', 'val')} split"
    return [f"Scored on {where}, {describe_inference(section.get('inference'))}.", ""]


def study_markdown(result: Mapping[str, Any]) -> str:
    """Every section as a table: mean ± std over seeds, and Δ to the full model ± its 95 % interval."""
    lines = [
        "# The paper's claims under seeds",
        "",
        config_line(result)
        + f". Seeds {', '.join(map(str, result['seeds']))}; per row the mean ± sample std over seeds, and "
        "(Δ) the paired difference to the full model, seed by seed, ± the half-width of its 95 % Student-t "
        "interval (an interval that excludes 0 is a difference the seeds support). Pretrained inits use "
        f"`{' '.join(result['recipe_for_pretrained_inits'])}`. Values in %.",
    ]
    for sec in result["sections"]:
        rows = sec["rows"]
        keys = list(next(iter(rows.values())))
        heads = [LABELS.get(k, k.replace("sim_", "sim. ")) for k in keys]
        lines += [
            "",
            f"## {sec['table']}, init {sec['init']} (full model: `{sec['full']}`)",
            "",
            *_scored_line(sec),
            "| Row | " + " | ".join(heads) + " |",
            "|---|" + "---:|" * len(keys),
        ]
        for name, stats in rows.items():
            lines.append(
                f"| `{name}` | " + " | ".join(_cell(stats[k], name == sec["full"]) for k in keys) + " |"
            )
        lines += ["", f"![{sec['table']}, init {sec['init']}: mean ± std over seeds]({_chart_name(sec)})"]
    claims = result.get("claims") or evaluate_claims(result["sections"])
    if claims:
        lines += [
            "",
            "## The paper's claims",
            "",
            "Each claim as the direction of a paired difference (row − full model); **reproduced**: its 95 % "
            "interval lies on the paper's side of 0, **reversed**: on the other side, **not resolved**: it "
            "contains 0.",
            "",
            "| Claim | Init | Δ (row − full) | 95 % interval | Verdict |",
            "|---|---|---:|---|---|",
        ]
        for c in claims:
            d = c["diff"]
            ci = "–" if d["half_width"] is None else f"[{d['low']:+.2f}, {d['high']:+.2f}]"
            lines.append(f"| {c['claim']} | {c['init']} | {d['mean']:+.2f} | {ci} | {c['verdict']} |")
    lines += ["", f"Total time: {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _chart(section: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars of a section: per row the mean over seeds of each metric, ± the std over seeds."""
    from equiseg.reports.figures import bar_chart

    rows = section["rows"]
    keys = [k for k in METRICS[section["table"]]]
    n = max((len(rows[r][k]["values"]) for r in rows for k in keys), default=0)
    return bar_chart(
        list(rows),
        {LABELS[k]: [rows[r][k]["mean"] for r in rows] for k in keys},
        path,
        errors={LABELS[k]: [rows[r][k]["std"] for r in rows] for k in keys},
        title=f"{section['table']}, init {section['init']}: mean ± std over {n} seed{'s' if n != 1 else ''}",
        ylabel="mIoU (%)",
        xlabel="row (full model first)",
    )
