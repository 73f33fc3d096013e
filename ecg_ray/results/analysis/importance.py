"""Which knobs mattered: the importance of every searched key, from the experiment's own results.

    ecg-ray report ~/ecg_ray_results/extended      # report/importance.* and importance.png

One Optuna study is built in memory from the configs table (`create_study` + `add_trials`: one
complete trial per config, its searched values as params, its mean best val macro-F1 over seeds
as the value) and Optuna's fANOVA evaluator (`optuna.importance.FanovaImportanceEvaluator`, a
random forest fitted to the configs, seeded so the numbers repeat) gives each key's share of the
variance of that mean explained by the key alone; the shares sum to 1.

Why fANOVA and not PED-ANOVA: PED-ANOVA asks what distinguishes the top quantile of trials (10%
by default), which for a 16-point grid is one or two configs; fANOVA uses every config, handles
categorical and numeric keys alike, and is Optuna's default. Distributions are read off the
table: strings, booleans and numeric keys with at most GRID_VALUES values (grid axes) are
categorical; wider numeric draws are ranges (log-scaled when positive over a decade or more).
With fewer than MIN_CONFIGS configs, or configs that all scored the same (nothing to explain: a
first short run where every model calls every record Normal), no importance is estimated: the
report says so in one line instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecg_ray.schema import RANK_METRIC

MIN_CONFIGS = 8
GRID_VALUES = 8
SEED = 0
# Optuna's defaults are 64 trees of depth 64: 1.4 s for 200 configs, where 32 trees of depth 8 take
# 0.4 s and rank the same keys first (benchmarks/report_speed.py); a few hundred configs need no deeper trees.
TREES, DEPTH = 32, 8
METHOD = f"fANOVA (optuna.importance.FanovaImportanceEvaluator, {TREES} trees of depth {DEPTH}, seed {SEED})"
SCORE = f"best_{RANK_METRIC}_mean"


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def distribution(values: pd.Series):
    """The Optuna distribution a column of searched values was drawn from, as read off the values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    uniques = sorted({_plain(v) for v in values}, key=lambda v: (isinstance(v, str), str(v) if isinstance(v, str) else v))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in uniques)
    if not numeric or len(uniques) <= GRID_VALUES:
        return CategoricalDistribution(uniques)
    low, high = float(min(uniques)), float(max(uniques))
    if all(float(v).is_integer() for v in uniques):
        return IntDistribution(int(low), int(high))
    return FloatDistribution(low, high, log=low > 0 and high / low >= 10)


def importance(configs: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame | None, str]:
    """(table of key, importance, rank; or None) and a sentence saying what it is or why there is none."""
    if not keys:
        return None, "No searched key varies, so there is no importance to estimate."
    scored = configs[np.isfinite(pd.to_numeric(configs[SCORE], errors="coerce"))]
    if len(scored) < MIN_CONFIGS:
        return None, (f"Importance needs at least {MIN_CONFIGS} configs with a score; this experiment has {len(scored)}, "
                      "so none is estimated (fANOVA's forest would fit noise).")
    scores = scored[SCORE].astype(float)
    if scores.nunique() == 1:  # fANOVA divides by the variance: a forest of constant trees has none
        return None, (f"Importance: every config scored the same (mean best val macro-F1 {scores.iloc[0]:.4f}), so no key "
                      "explains any variance and none is estimated.")
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    dists = {k: distribution(scored[k]) for k in keys}
    study = optuna.create_study(direction="maximize")  # in memory: nothing is written
    study.add_trials([optuna.trial.create_trial(params={k: _plain(row[k]) for k in keys}, distributions=dists,
                                                value=float(row[SCORE])) for _, row in scored.iterrows()])
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=TREES, max_depth=DEPTH, seed=SEED)
    try:
        shares = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    except (RuntimeError, ValueError, ZeroDivisionError) as err:  # a shape of scores the forest cannot fit
        return None, f"Importance: fANOVA could not be fitted to these {len(scored)} configs ({' '.join(str(err).split())})."
    table = pd.DataFrame({"key": list(shares), "importance": [float(v) for v in shares.values()]})
    table = table.sort_values(["importance", "key"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["method"] = METHOD
    return table, (f"Hyperparameter importance over {len(scored)} configs: each key's share of the variance of the mean "
                   f"best val macro-F1 explained by that key alone, by {METHOD}; the shares sum to 1.")
