"""The held-out test split: evaluated once, after tuning, on checkpoints chosen by validation only.

    ecg-ray tune experiments/quick.yaml     # with data.test_fraction > 0: report/test.* is written

With `data.test_fraction > 0` the test records are split off first (their ids are in
data_splits.json) and no trial ever sees them: trials train on `train` and are
ranked, pruned and checkpointed on `val`. After tuning, the checkpoint of each of the
top configs' seeds at its best *val* epoch predicts the test split: macro-F1, challenge
F1 (mean F1 of N, A, O: the CinC 2017 score), per-class precision/recall/F1, the
confusion matrix, and a percentile bootstrap 95% CI over records (seeded, so the
table is the same every time).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecg_ray.config import TrialConfig
from ecg_ray.results.folder import ExperimentDir
from ecg_ray.results.stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED
from ecg_ray.schema import CLASS_KEYS, CONFIG_COLUMNS, RANK_METRIC, confusion_columns

TOP_CONFIGS = 3


def bootstrap_ci(y: np.ndarray, pred: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Percentile 95% CIs of macro-F1 and challenge F1 over records resampled with replacement."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    labels = [0, 1, 2, 3]
    macro, challenge = [], []
    for _ in range(samples):
        i = rng.integers(0, len(y), len(y))
        f1 = f1_score(y[i], pred[i], labels=labels, average=None, zero_division=0)
        macro.append(f1.mean())
        challenge.append(f1[:3].mean())
    lo, hi = 2.5, 97.5
    return {"test_macro_f1_ci_low": float(np.percentile(macro, lo)), "test_macro_f1_ci_high": float(np.percentile(macro, hi)),
            "test_challenge_f1_ci_low": float(np.percentile(challenge, lo)),
            "test_challenge_f1_ci_high": float(np.percentile(challenge, hi))}


def evaluate_test(exp_dir: str, trials: pd.DataFrame, data, top: int = TOP_CONFIGS,
                  predictions: dict | None = None) -> pd.DataFrame | None:
    """One row per trial of the top `top` configs: its best-val-epoch checkpoint on the test split.

    `data` is the experiment's PreparedData; None when it has no test split. `predictions`, when
    given, is filled with every test record's id and label and each trial's predicted class (what
    `ecg-ray compare` resamples for its paired bootstrap).
    """
    from ecg_ray.results.predict import best_checkpoint, class_probabilities, model_from
    from ecg_ray.results.report import rank_configs
    from ecg_ray.training.loop import classification_metrics, split_array

    if "test" not in data.x or not len(data.y["test"]):
        return None
    exp = ExperimentDir.parse(exp_dir)
    y = data.y["test"]
    rows, preds = [], {}
    for _, config in rank_configs(trials).head(top).iterrows():
        for trial_id in config["trial_ids"].split(","):
            trial = trials[trials["trial_id"] == trial_id].iloc[0]
            saved = best_checkpoint(exp, trial_id, int(trial["best_epoch"]), float(trial[f"best_{RANK_METRIC}"]))
            if saved is None:
                continue  # its best epoch's checkpoint was not kept (the report says which are missing)
            trained = TrialConfig.from_dict(saved["trial"])
            x = split_array(data, trained, "test")  # at the trial's target_length
            pred = class_probabilities(model_from(saved), x, trained.batch_size, trained).argmax(1)
            m = classification_metrics(y, pred)
            preds[trial_id] = [int(p) for p in pred]
            row = {"config_rank": int(config["rank"]), "trial_id": trial_id}
            row |= {k: trial[k] for k in CONFIG_COLUMNS} | {"best_val_epoch": int(saved["metrics"]["epoch"]), "n_test": len(y)}
            row |= {"test_macro_f1": m["macro_f1"], "test_challenge_f1": m["challenge_f1"], "test_acc": m["acc"]}
            row |= bootstrap_ci(y, pred)
            row |= {f"test_{p}_{k}": m[f"{p}_{k}"] for p in ("precision", "recall", "f1") for k in CLASS_KEYS}
            row |= dict(zip(confusion_columns(), (int(v) for r in m["confusion"] for v in r)))
            rows.append(row)
    if predictions is not None and preds:
        predictions |= {"ids": list(data.ids["test"]), "y": [int(v) for v in y], "pred": preds}
    return pd.DataFrame(rows) if rows else None


def predict_folds(exp_dir: str, trials: pd.DataFrame, data, notes: list[str] | None = None) -> dict:
    """{"y": {record: label}, "pred": {trial id: {"ids": [...], "pred": [...]}}} of every fold trial
    whose best-val-epoch checkpoint was kept (the others are named in `notes`)."""
    from ecg_ray.config import TrialConfig
    from ecg_ray.data.prepare import fold_view
    from ecg_ray.results.predict import best_checkpoint, class_probabilities, model_from
    from ecg_ray.training.loop import split_array

    exp = ExperimentDir.parse(exp_dir)
    labels, preds = {}, {}
    for _, trial in trials.sort_values("trial_id").iterrows():
        if trial.get("fold") is None or trial["fold"] != trial["fold"]:
            continue
        saved = best_checkpoint(exp, trial["trial_id"], int(trial["best_epoch"]), float(trial[f"best_{RANK_METRIC}"]), notes)
        if saved is None:
            if notes is not None:
                notes.append(f"trial {trial['trial_id']}: its best epoch's checkpoint was not kept, so its fold has no "
                             "out-of-fold predictions")
            continue
        trained = TrialConfig.from_dict(saved["trial"])
        view = fold_view(data, trained.fold)
        x = split_array(view, trained, "val")
        pred = class_probabilities(model_from(saved), x, trained.batch_size, trained).argmax(1)
        labels |= {rid: int(label) for rid, label in zip(view.ids["val"], view.y["val"])}
        preds[trial["trial_id"]] = {"ids": list(view.ids["val"]), "pred": [int(p) for p in pred]}
    return {"y": dict(sorted(labels.items())), "pred": preds}
