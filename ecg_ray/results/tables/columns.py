"""Names of the table columns people read, and which config keys a table shows: used by the
report (ecg_ray.results.report), its figures and the command line alike."""

from __future__ import annotations

import pandas as pd

from ecg_ray.schema import CONFIG_COLUMNS, RANK_METRIC

SUMMARY_COLUMNS = [
    "rank", "lr", "hidden_size", "dropout", "optimizer", "best_epoch", f"best_{RANK_METRIC}",
    f"last_{RANK_METRIC}", "val_challenge_f1", "val_acc", "epochs_run", "early_stopped", "wall_time_s",
]


CONFIG_SUMMARY_COLUMNS = [
    "rank", "lr", "hidden_size", "dropout", "optimizer", "n_seeds", "n_folds", f"best_{RANK_METRIC}_mean", f"best_{RANK_METRIC}_sd",
    f"best_{RANK_METRIC}_ci_low", f"best_{RANK_METRIC}_ci_high", "val_challenge_f1_mean", "oof_macro_f1", "oof_macro_f1_ci_low",
    "oof_macro_f1_ci_high", "p_vs_best", "tied_with_best",
]


TEST_SUMMARY_COLUMNS = [
    "config_rank", "trial_id", "evaluated", "lr", "hidden_size", "dropout", "optimizer", "seed", "fold", "best_val_epoch", "n_test",
    "test_macro_f1", "test_macro_f1_ci_low", "test_macro_f1_ci_high", "test_challenge_f1",
    "ensemble_gain", "ensemble_gain_ci_low", "ensemble_gain_ci_high",
]


# What repeats a config rather than changing it: its seed and its cross-validation fold.
REPLICATE_KEYS = ("seed", "fold")


def varying_keys(table: pd.DataFrame) -> list[str]:
    """The config keys (seed and fold aside) that take more than one value in a trials or configs table."""
    return [c for c in CONFIG_COLUMNS if c not in REPLICATE_KEYS and c in table and table[c].nunique() > 1]


def with_varying_knobs(columns: list[str], table: pd.DataFrame) -> list[str]:
    """`columns` present in `table`, plus (after `optimizer`) every other config key that varies in it:
    a random search's weight decay, schedule, ... show in the printed and HTML summaries."""
    shown = [c for c in columns if c in table.columns]
    extra = [c for c in varying_keys(table) if c not in shown]
    at = shown.index("optimizer") + 1 if "optimizer" in shown else len(shown)
    return shown[:at] + extra + shown[at:]
