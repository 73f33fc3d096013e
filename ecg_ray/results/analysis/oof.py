"""Out-of-fold predictions of a cross-validated experiment: every record validated once per seed.

    ecg-ray tune experiments/cv.yaml      # data.folds: 5 -> oof_predictions.json, configs.* oof_* columns

After tuning, each fold trial's checkpoint (ecg_ray.results.inference.evaluate.predict_folds) at its best val epoch predicts the fold it was
validated on (the records its training never saw), so a config's trials at one seed predict
every record of the pool exactly once. `oof_macro_f1` and `oof_challenge_f1` are the macro-F1
and challenge F1 of those predictions (the mean over the config's seeds), beside the fold
mean, with a percentile 95% CI over records from a seeded bootstrap (each resample scores
every seed's predictions on the same records).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ecg_ray.results.analysis.stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, class_f1
from ecg_ray.schema import RANK_METRIC

OOF_COLUMNS = ["oof_macro_f1", "oof_macro_f1_ci_low", "oof_macro_f1_ci_high", "oof_challenge_f1", "oof_records"]


def _scores(y: np.ndarray, preds: list[np.ndarray], idx: np.ndarray) -> tuple[float, float]:
    f1 = np.mean([class_f1(y[idx], p[idx]) for p in preds], axis=0)
    return float(f1.mean()), float(f1[:3].mean())


def oof_columns(configs: pd.DataFrame, trials: pd.DataFrame, oof: dict | None,
                samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """`configs` with OOF_COLUMNS (NaN for a config whose folds do not cover the pool at any seed)."""
    out = configs.copy()
    rows = []
    y_by_id = (oof or {}).get("y", {})
    pool = sorted(y_by_id)
    y = np.array([y_by_id[r] for r in pool], dtype=np.int64)
    where = {r: i for i, r in enumerate(pool)}
    for _, config in configs.iterrows():
        ids = str(config["trial_ids"]).split(",")
        mine = trials[trials["trial_id"].isin(ids)]
        per_seed = []
        for _, g in mine.groupby("seed", sort=True):
            pred = np.full(len(pool), -1, dtype=np.int64)
            for trial_id in g["trial_id"]:
                part = (oof or {}).get("pred", {}).get(trial_id)
                if part:
                    pred[[where[r] for r in part["ids"]]] = part["pred"]
            if len(pool) and (pred >= 0).all():
                per_seed.append(pred)
        if not per_seed:
            rows.append({c: math.nan for c in OOF_COLUMNS} | {"oof_records": 0})
            continue
        macro, challenge = _scores(y, per_seed, np.arange(len(y)))
        rng = np.random.default_rng(seed)
        boot = [_scores(y, per_seed, rng.integers(0, len(y), len(y)))[0] for _ in range(samples)]
        rows.append({"oof_macro_f1": macro, "oof_macro_f1_ci_low": float(np.percentile(boot, 2.5)),
                     "oof_macro_f1_ci_high": float(np.percentile(boot, 97.5)), "oof_challenge_f1": challenge,
                     "oof_records": len(y)})
    for col in OOF_COLUMNS:
        out[col] = [r[col] for r in rows]
    return out
