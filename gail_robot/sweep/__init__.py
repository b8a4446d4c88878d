"""``gail-robot sweep``: K seeds (× a grid of overrides) as ordinary run directories on a Ray cluster.

Rooms: ``plan`` (arguments, run directories, ``sweep.json``), ``task`` (what one Ray task does: train
in a subprocess, evaluate, ship the run back when there is no shared filesystem), ``runner`` (the
driver: scheduling, resume, progress), ``stats`` (IQM and stratified-bootstrap confidence intervals),
``report`` (``summary.json``, ``summary.md``, ``curves.png``) and ``cli``. See docs/DESIGN.md §9.2.
"""
