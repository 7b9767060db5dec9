"""Report writers and their figures: matplotlib charts (:mod:`.figures`) and the
self-contained ``report.html`` written beside each ``report.md`` (:mod:`.html`).

The samples behind Fig. 2 are picked and predicted by :mod:`.predictions`. The modules load on first use
(matplotlib is imported only by :mod:`.figures`)."""

__all__ = ["figures", "html", "predictions"]
