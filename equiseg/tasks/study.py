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
interval; with one seed there is no interval (:mod:`equiseg.studies.stats`; the paper's claims and
their verdicts: :mod:`equiseg.studies.claims`; the tables: :mod:`equiseg.reports.study`).

``--quick`` uses the ablation runner's short schedule and val subset for every table (so Tab. 1 and
Tab. 2/3 share one schedule); ``--schedule standard`` the longer one of the demo setting
(:data:`equiseg.studies.schedules.STANDARD_OVERRIDES`, every val sample).

**Across sittings.** With ``--records DIR`` (e.g. ``docs/results/<study>``) every finished run also leaves
its small record in ``DIR`` (:mod:`.records`: config, log, metrics, robustness and analysis JSON, no
checkpoints), and a run whose resolved config matches a record is taken from it instead of trained:
commit the records as they land, and the same command in a later session continues the study.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from equiseg.config import ExperimentConfig, load_experiment
from equiseg.reports.study import chart_name, study_chart, study_markdown, write_study_reports
from equiseg.studies.ablation import TABLES
from equiseg.studies.claims import (
    CLAIMS,
    LABELS,
    METRICS,
    PRETRAINED_RECIPE,
    TAB1_MODELS,
    evaluate_claims,
)
from equiseg.studies.claims import verdict as _verdict  # noqa: F401 (its former name)
from equiseg.studies.schedules import resolve_schedule
from equiseg.studies.stats import paired_difference, spread, t_quantile
from equiseg.utils import check_names, write_json_atomic

from .runner import with_schedule

# The claims, metrics and statistics live in equiseg.studies, the writers in equiseg.reports.study;
# their names stay importable from here.
__all__ = [
    "CLAIMS",
    "LABELS",
    "METRICS",
    "PRETRAINED_RECIPE",
    "TAB1_MODELS",
    "check_study_lists",
    "evaluate_claims",
    "paired_difference",
    "render_study",
    "run_study",
    "study_markdown",
    "t_quantile",
]


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
    from equiseg.studies.ablation import table_rows

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
        schedule: ``"quick"`` or ``"standard"`` (:data:`equiseg.studies.schedules.SCHEDULES`) for every
            table; None: the config's own schedule.
        records: A record tree (:mod:`.records`; e.g. ``docs/results/<study>``): every finished run
            leaves its small record there, at the same relative path as its folder under ``out_dir``,
            and a run whose resolved config matches a record anywhere in the tree is taken from it
            instead of being trained -- a study is finished over several sittings by re-running it.

    Raises:
        ValueError / FileNotFoundError: before the first run, for an empty list or an unknown table,
            model, row, init or a missing weights file (:func:`check_study_lists`).
    """
    from equiseg.studies.ablation import table_rows

    from .ablate import run_ablation
    from .compare import run_compare

    t0 = time.perf_counter()
    tables, models, inits, only, seeds = check_study_lists(tables, models, inits, only, seeds)
    out = Path(out_dir)
    sched = resolve_schedule(schedule, quick)
    user, max_samples = with_schedule(list(overrides), sched, max_samples)
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
                    k: {**spread(v), "vs_full": paired_difference(v, rows[full][k])} for k, v in vals.items()
                }
            sections.append(section)
            study_chart(section, out / chart_name(section))

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
    write_study_reports(result, out)
    write_json_atomic(files["json"], result)
    return result


def render_study(path: str | Path) -> dict[str, Any]:
    """Rewrite ``study.md``, ``report.html``, the charts (and the ``claims`` of ``study.json``) from an
    existing ``study.json``, with this version's claims and layout -- no run is repeated. Returns the
    updated content."""
    path = Path(path)
    result = json.loads(path.read_text())
    result["claims"] = evaluate_claims(result["sections"])
    for section in result["sections"]:
        study_chart(section, path.parent / chart_name(section))
    write_study_reports(result, path.parent)
    write_json_atomic(path, result)
    return result
