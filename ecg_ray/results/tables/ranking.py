"""The rankings: trials by their best val macro-F1, and configs by their mean over seeds and folds
with CIs and a paired tie test against the best (ecg_ray.results.analysis.stats).

    python -c "from ecg_ray.results.report import read_results; from ecg_ray.results.tables.ranking import rank_configs; print(rank_configs(read_results('~/ecg_ray_results/quick').trials))"
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ecg_ray.errors import ConfigError
from ecg_ray.results.analysis.stats import ALPHA, holm, mean_sd_ci, paired_p_value
from ecg_ray.results.tables.columns import REPLICATE_KEYS
from ecg_ray.schema import CLASS_KEYS, CONFIG_COLUMNS, RANK_METRIC, RUN_COLUMNS


def rank_trials(hist: pd.DataFrame, status: dict | None = None, scheduler: str | None = None) -> pd.DataFrame:
    """One row per trial, ranked by best val macro-F1 (ties: lower val loss, then config order).

    Args:
        hist: the output of `history`.
        status: trial id -> {"status": ...} from trial_status.json.
        scheduler: 'asha' or 'none'; early stops are only attributed to ASHA when it ran.
    """
    status = status or {}
    rows = []
    for trial_id, g in hist.groupby("trial_id", sort=True):
        g = g.sort_values("epoch")
        best = g.loc[g[RANK_METRIC].idxmax()]  # first epoch reaching the best value
        last = g.iloc[-1]
        # No recorded end: a trial of an interrupted (or still running) experiment, unless it ran every epoch.
        st = status.get(trial_id, {}).get("status", "UNFINISHED")
        epochs_run = int(last["epoch"])
        row = {"trial_id": trial_id}
        row |= {k: best[k] for k in CONFIG_COLUMNS}
        row |= {
            "best_epoch": int(best["epoch"]),
            f"best_{RANK_METRIC}": float(best[RANK_METRIC]),
            f"last_{RANK_METRIC}": float(last[RANK_METRIC]),
            "val_challenge_f1": float(best["val_challenge_f1"]),
            **{f"val_f1_{k}": float(best[f"val_f1_{k}"]) for k in CLASS_KEYS},
            "val_acc": float(best["val_acc"]),
            "val_loss": float(best["val_loss"]),
            "epochs_run": epochs_run,
            "early_stopped": bool(st == "TERMINATED" and epochs_run < int(best["epochs"]) and scheduler != "none"),
            "status": "TERMINATED" if st == "UNFINISHED" and epochs_run >= int(best["epochs"]) else st,
            "wall_time_s": float(last["time_total_s"]) if pd.notna(last.get("time_total_s")) else float(g["epoch_time_s"].sum()),
            "data_hash": last.get("data_hash"),
            "node_ids": ",".join(sorted({str(n) for n in g["node_id"].dropna()})),
        }
        rows.append(row)
    if not rows:
        raise ConfigError("No trial has finished an epoch yet, so there is nothing to rank.")
    df = pd.DataFrame(rows)
    df = df.sort_values(
        [f"best_{RANK_METRIC}", "val_loss", *CONFIG_COLUMNS],
        ascending=[False, True] + [True] * len(CONFIG_COLUMNS),
        kind="stable",
    ).reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


# Summarised over the seeds of each config in the configs table.
SEED_METRICS = [f"best_{RANK_METRIC}", "val_challenge_f1", *(f"val_f1_{k}" for k in CLASS_KEYS)]


def replicate(row) -> tuple:
    """A trial's (seed, fold): what pairs it with the trials of another config (fold None: the single split)."""
    fold = row.get("fold") if hasattr(row, "get") else None
    return int(row["seed"]), (None if fold is None or fold != fold else int(fold))


def rank_configs(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per config (every trial key but the seed and the fold), ranked by the mean best val
    macro-F1 over its trials: its seeds, times its folds in a cross-validated experiment.

    Per metric in SEED_METRICS: mean, sd, 95% CI over those trials (NaN with one). `p_vs_best`
    is the Holm-corrected paired t-test p-value against the best config, paired by (seed,
    fold), and `tied_with_best` says "best", "yes" (indistinguishable at ALPHA), "no", or "n/a"
    (fewer than two shared pairs: no test). See ecg_ray.results.analysis.stats.
    """
    keys = [c for c in CONFIG_COLUMNS if c not in REPLICATE_KEYS]
    has_folds = "fold" in trials and trials["fold"].notna().any()
    rows, scores = [], []
    for values, g in trials.groupby(keys, sort=False, dropna=False):
        g = g.assign(_pair=[replicate(r) for _, r in g.iterrows()])
        g = g.sort_values("_pair", key=lambda pairs: pairs.map(lambda p: (p[0], -1 if p[1] is None else p[1])))
        seeds = list(dict.fromkeys(int(s) for s in g["seed"]))
        row = dict(zip(keys, values)) | {"n_seeds": len(seeds), "seeds": ",".join(map(str, seeds))}
        if has_folds:
            folds = sorted({p[1] for p in g["_pair"] if p[1] is not None})
            row |= {"n_folds": len(folds), "folds": ",".join(map(str, folds)), "n_trials": len(g)}
        for m in SEED_METRICS:
            mean, sd, lo, hi = mean_sd_ci(g[m])
            row |= {f"{m}_mean": mean, f"{m}_sd": sd, f"{m}_ci_low": lo, f"{m}_ci_high": hi}
        row["trial_ids"] = ",".join(g["trial_id"])
        rows.append(row)
        scores.append(dict(zip(g["_pair"], g[f"best_{RANK_METRIC}"])))
    df = pd.DataFrame(rows)
    df["_scores"] = scores
    df = df.sort_values([f"best_{RANK_METRIC}_mean", *keys], ascending=[False] + [True] * len(keys), kind="stable")
    best = df["_scores"].iloc[0]
    p_raw = []
    for other in df["_scores"].iloc[1:]:
        shared = sorted(set(best) & set(other))
        p_raw.append(paired_p_value([best[s] for s in shared], [other[s] for s in shared]))
    p_adj = [math.nan] + holm(p_raw)
    df["p_vs_best"] = p_adj
    df["tied_with_best"] = ["best"] + ["n/a" if math.isnan(p) else ("yes" if p >= ALPHA else "no") for p in p_adj[1:]]
    df = df.drop(columns="_scores").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The table without the columns that say where/when a run happened: equal for equal runs."""
    return df.drop(columns=[c for c in RUN_COLUMNS + ["time_total_s"] if c in df.columns]).reset_index(drop=True)


def runs_per_config(configs: pd.DataFrame) -> pd.Series:
    """The trials behind each config's mean: its seeds, times its folds when cross-validated."""
    return configs["n_trials"] if "n_trials" in configs else configs["n_seeds"]


def config_folds(configs: pd.DataFrame) -> int:
    """K of a cross-validated configs table; 0 for the single split."""
    return int(configs["n_folds"].max()) if "n_folds" in configs else 0


def config_seeds(configs: pd.DataFrame) -> list[int]:
    """Every seed of a configs table (its `seeds` column lists each config's)."""
    return sorted({int(s) for row in configs["seeds"] for s in str(row).split(",")})


def seeds_note(configs: pd.DataFrame) -> str:
    """What the configs table is: a mean over seeds (and folds) with a CI and a tie test, or single runs."""
    k = config_folds(configs)
    if k:
        return (f"{k}-fold cross-validation at seeds {config_seeds(configs)}: mean, sd and 95% t-interval of the best "
                f"val macro-F1 over each config's {k} folds x seeds; tied_with_best: a paired t-test by (seed, fold) "
                "against the best config, Holm-corrected, p >= 0.05.")
    if (configs["n_seeds"] > 1).any():
        return (f"Configs over seeds {config_seeds(configs)}: mean, sd and 95% t-interval of the best val macro-F1; "
                "tied_with_best: a paired t-test by seed against the best config, Holm-corrected, p >= 0.05.")
    return ("One seed per config: the ranking is a single run each, with no confidence interval. "
            "Set `repeats: 3` in the experiment file to rank configs by their mean over seeds.")
