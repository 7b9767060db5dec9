"""The applications, one module per command, each a function the CLI calls (``equiseg.cli`` only parses):

``demo`` (``equiseg demo``), ``predict``, ``export``, ``analysis`` (``analyze``), ``robustness_run``
(``robustness``), ``ablate``, ``compare``, ``study``, ``pretrain``. They are built on the machinery in
:mod:`equiseg.engine` (training loop, evaluation, inference modes, checkpoints, metrics, distributed)
and write their reports through :mod:`equiseg.reports`. Modules load on first use: importing
``equiseg.tasks`` imports none of them.
"""
