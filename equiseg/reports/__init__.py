"""Every writer of the package's reports: the Markdown tables, the JSON and Markdown files of a result,
the self-contained ``report.html`` and the figures. They lay out results computed elsewhere (beyond
means over runs, only :mod:`.predictions` runs a model: on the few samples Fig. 2 shows).

- Results of one kind: :mod:`.robustness` (the benchmark, :mod:`equiseg.robustness`), :mod:`.analysis`
  (the contribution analysis, :mod:`equiseg.analysis`), :mod:`.ablation`, :mod:`.compare` and
  :mod:`.study` (the study commands; their designs are :mod:`equiseg.studies`).
- Shared: :mod:`.tables` (the modalities' display names, how a study's table was made; numbers through
  :func:`equiseg.formatting.fmt`), :mod:`.html` (``report.html`` beside each ``report.md``),
  :mod:`.figures` (every chart, drawn in :mod:`.charts` and :mod:`.grids` on :mod:`.plotting`),
  :mod:`.predictions` (the samples behind Fig. 2, picked and predicted) and :mod:`.panels` (the pictures
  of a sample, re-exported from :mod:`equiseg.data.panels`).

The one writer below this package is the training run's ``metrics.md``
(:func:`equiseg.engine.evaluate.metrics_markdown`): the trainer writes it at every validation
(docs/architecture.md). The modules load on first use (matplotlib is imported only by the figures).
"""

__all__ = [
    "ablation",
    "analysis",
    "charts",
    "compare",
    "figures",
    "grids",
    "html",
    "plotting",
    "predictions",
    "robustness",
    "study",
    "tables",
]
