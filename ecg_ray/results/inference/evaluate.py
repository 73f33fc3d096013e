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

import math

import numpy as np
import pandas as pd

from ecg_ray.config import TrialConfig
from ecg_ray.results.analysis.stats import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, class_f1, paired_bootstrap
from ecg_ray.results.tables.columns import REPLICATE_KEYS
from ecg_ray.schema import CLASS_KEYS, CONFIG_COLUMNS, RANK_METRIC, confusion_columns

TOP_CONFIGS = 3


def bootstrap_ci(y: np.ndarray, pred: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Percentile 95% CIs of macro-F1 and challenge F1 over records resampled with replacement."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    macro, challenge = [], []
    for _ in range(samples):
        i = rng.integers(0, len(y), len(y))
        f1 = class_f1(y[i], pred[i])
        macro.append(f1.mean())
        challenge.append(f1[:3].mean())
    lo, hi = 2.5, 97.5
    return {"test_macro_f1_ci_low": float(np.percentile(macro, lo)), "test_macro_f1_ci_high": float(np.percentile(macro, hi)),
            "test_challenge_f1_ci_low": float(np.percentile(challenge, lo)),
            "test_challenge_f1_ci_high": float(np.percentile(challenge, hi))}


def evaluate_test(results, data, top: int = TOP_CONFIGS, predictions: dict | None = None) -> pd.DataFrame | None:
    """One row per trial of the top `top` configs of `results` (ecg_ray.results.store.results.Results): its
    best-val-epoch checkpoint on the test split;
    and for a config of several trials (seeds, folds), a row for their ensemble (the mean of their
    class probabilities, as best_model.pt predicts) with its paired bootstrap against the config's
    single best trial (its best by val macro-F1, the one best_trial_model.pt holds).

    `data` is the experiment's PreparedData; None when it has no test split. `predictions`, when
    given, is filled with every test record's id and label, each trial's predicted class (what
    `ecg-ray compare` resamples for its paired bootstrap) and each ensemble's, by config rank.
    """
    from ecg_ray.results.inference.predict import class_probabilities, kept_members, model_from
    from ecg_ray.results.tables.ranking import rank_configs
    from ecg_ray.training.loop import split_array

    if "test" not in data.x or not len(data.y["test"]):
        return None
    trials = results.trials
    y = data.y["test"]
    rows, preds, ensembles = [], {}, {}
    for _, config in rank_configs(trials).head(top).iterrows():
        probs = {}
        for trial, saved in kept_members(results, config):  # a missing checkpoint: the report names it
            trial_id = trial["trial_id"]
            trained = TrialConfig.from_dict(saved["trial"])
            x = split_array(data, trained, "test")  # at the trial's target_length
            probs[trial_id] = class_probabilities(model_from(saved), x, trained.batch_size, trained)
            pred = probs[trial_id].argmax(1)
            preds[trial_id] = [int(p) for p in pred]
            row = {"config_rank": int(config["rank"]), "trial_id": trial_id, "evaluated": "best trial" if len(probs) == 1 else "trial"}
            row |= {k: trial[k] for k in CONFIG_COLUMNS} | {"best_val_epoch": int(saved["metrics"]["epoch"])}
            rows.append(row | test_scores(y, pred))
        if len(probs) > 1:
            pred = np.mean(list(probs.values()), axis=0).argmax(1)
            ensembles[str(int(config["rank"]))] = [int(p) for p in pred]
            gain = paired_bootstrap(y, pred, preds[next(iter(probs))])  # against the config's best trial
            row = {"config_rank": int(config["rank"]), "trial_id": "ensemble", "evaluated": f"ensemble of {len(probs)}",
                   "members": ",".join(probs)}
            row |= {k: (math.nan if k in REPLICATE_KEYS else config[k]) for k in CONFIG_COLUMNS if k in config}
            row |= {"best_val_epoch": math.nan} | test_scores(y, pred)
            row |= {"ensemble_gain": gain["test_diff"], "ensemble_gain_ci_low": gain["test_diff_ci_low"],
                    "ensemble_gain_ci_high": gain["test_diff_ci_high"]}
            rows.append(row)
    if predictions is not None and preds:
        predictions |= {"ids": list(data.ids["test"]), "y": [int(v) for v in y], "pred": preds}
        predictions |= {"ensemble": ensembles} if ensembles else {}
    return pd.DataFrame(rows) if rows else None


def test_scores(y: np.ndarray, pred: np.ndarray) -> dict:
    """A test row's numbers: macro-F1, challenge F1 and accuracy with bootstrap CIs, per-class
    precision, recall and F1, the confusion matrix."""
    from ecg_ray.training.loop import classification_metrics

    m = classification_metrics(y, pred)
    row = {"n_test": len(y), "test_macro_f1": m["macro_f1"], "test_challenge_f1": m["challenge_f1"], "test_acc": m["acc"]}
    row |= bootstrap_ci(y, pred)
    row |= {f"test_{p}_{k}": m[f"{p}_{k}"] for p in ("precision", "recall", "f1") for k in CLASS_KEYS}
    return row | dict(zip(confusion_columns(), (int(v) for r in m["confusion"] for v in r)))


def predict_folds(results, data, notes: list[str] | None = None) -> dict:
    """{"y": {record: label}, "pred": {trial id: {"ids": [...], "pred": [...]}}} of every fold trial
    whose best-val-epoch checkpoint was kept (the others are named in `notes`)."""
    from ecg_ray.config import TrialConfig
    from ecg_ray.data.prepare import fold_view
    from ecg_ray.results.inference.predict import class_probabilities, model_from
    from ecg_ray.training.loop import split_array

    labels, preds = {}, {}
    for _, trial in results.trials.sort_values("trial_id").iterrows():
        if trial.get("fold") is None or trial["fold"] != trial["fold"]:
            continue
        saved = results.checkpoint(trial["trial_id"], int(trial["best_epoch"]), float(trial[f"best_{RANK_METRIC}"]), notes)
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
