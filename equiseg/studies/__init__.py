"""The study designs behind ``equiseg ablate``, ``compare`` and ``study``: what runs a table is made
of and how it is judged, as data, apart from the commands that run them (``equiseg/tasks/``) and the
writers that lay them out (``equiseg/reports/``).

- :mod:`.schedules`: the training schedules (``--quick``, ``--schedule standard``).
- :mod:`.ablation`: the ablation tables (paper Tab. 2 / Tab. 3 and this project's own), their rows'
  configs and the paper's numbers.
- :mod:`.peers`: ``compare``'s per-model run config and the columns of the paper's Tab. 1.
- :mod:`.claims`: ``study``'s models and metrics, the paper's claims and their verdicts.
- :mod:`.stats`: mean ± std over seeds, paired differences and their 95 % intervals.
"""
