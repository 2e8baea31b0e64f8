"""``sslrun tune``: hyperparameter search on the validation split, on Optuna.

A search space (:mod:`ssl_core.tuning.space`) names the recipe keys to vary; a study
(:mod:`ssl_core.tuning.study`) proposes values and prunes; each trial trains the base
recipe with those values on every seed, as ordinary run folders started by the sweep
launchers (:mod:`ssl_core.tuning.trials`); :mod:`ssl_core.tuning.report` writes the
trial table, ``best.toml`` and figures. See docs/tuning.md.
"""
