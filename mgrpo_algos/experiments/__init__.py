"""Experiments as data: spec files played into resumable result cells, then summarised.

A spec (TOML) names the tasks, regimes, arms, seeds and budgets of a grid
(:mod:`~mgrpo_algos.experiments.spec`); ``mgrpo experiment run SPEC`` plays every
(task, regime, arm, seed) cell that its cells directory does not hold yet
(:mod:`~mgrpo_algos.experiments.runner`), one JSON file per finished cell
(:mod:`~mgrpo_algos.experiments.cells`); ``mgrpo experiment summary`` rebuilds the
tables and plots from those files alone (:mod:`~mgrpo_algos.experiments.summary`).

One module per part:

- :mod:`~mgrpo_algos.experiments.spec`: load and validate a spec; its plans and cell keys;
- :mod:`~mgrpo_algos.experiments.tables`: the typed dataclasses of its tables;
- :mod:`~mgrpo_algos.experiments.arms`: the arms a spec may name;
- :mod:`~mgrpo_algos.experiments.cache`: stamped caches (reused only when built the same way);
- :mod:`~mgrpo_algos.experiments.warm_starts`: the arms' SFT warm starts, built once per task;
- :mod:`~mgrpo_algos.experiments.diagnosis`: held-out evaluation, the regime's diagnosis;
- :mod:`~mgrpo_algos.experiments.cells`: the cell store (written on completion, skipped on rerun);
- :mod:`~mgrpo_algos.experiments.runner`: plays the missing cells, in parallel processes;
- :mod:`~mgrpo_algos.experiments.statistics`: intervals, paired differences, preconditions;
- :mod:`~mgrpo_algos.experiments.summary`: ``summary.md`` and PNG plots from the cells.

This package's ``__init__`` imports nothing, so that the light modules (the cache
stamps, the spec, the summary) load without torch.
"""
