"""The best model of an experiment, usable: `best_model.pt` and `ecg-ray predict`.

    ecg-ray predict ~/ecg_ray_results/quick/best_model.pt /data/training2017 --out predictions.csv

`best_model.pt` is the best config's model, with the trial config, the data preparation
settings and hash, the metrics and the library versions; it loads with
`torch.load(weights_only=True)`, no Ray needed. A config of one trial gives that trial's
checkpoint at its best val epoch (format 1). A config of several trials (seeds, folds)
gives their ensemble (format 2): every trial at its best val epoch, predicting the mean of
their class probabilities, with the share of members that agree in `predict`'s output;
`best_trial_model.pt` beside it is the config's single best trial alone (format 1).
`predict` reads a challenge folder (REFERENCE.csv optional), one `.mat`/`.hea` record, a
Parquet or a pickle file (`label` optional), checks every record as `tune` does, prepares
it as the model's data was prepared, and gives record id, predicted class and the
probability of each class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ecg_ray import provenance
from ecg_ray.config import DataConfig, TrialConfig
from ecg_ray.errors import DataError, EcgRayError
from ecg_ray.models import DEFAULT_MODEL, require
from ecg_ray import storage
from ecg_ray.results.store.folder import ExperimentDir, check_scheme
from ecg_ray.results.store.results import best_checkpoint, read_kept_checkpoint  # noqa: F401  (named here too: predict's API)
from ecg_ray.data.records import RecordSet
from ecg_ray.schema import CLASS_KEYS, CLASS_NAMES, LABEL_NAMES, RANK_METRIC

MODEL_FORMAT = 1  # one trial's model
ENSEMBLE_FORMAT = 2  # a config's trials (seeds, folds), predicting the mean of their probabilities


def model_from(saved: dict):
    """The model (eval mode) of a checkpoint or best_model.pt dict."""
    from ecg_ray.models import build_model

    model = build_model(TrialConfig(**saved["trial"]))
    model.load_state_dict(saved["model"])
    return model.eval()


def class_probabilities(model, x: np.ndarray, batch_size: int, trial=None) -> np.ndarray:
    """(n, 4) softmax probabilities, in batches of the trial's batch size and at its precision
    (the numbers training's evaluation saw)."""
    import torch

    from ecg_ray.training.loop import infer

    return torch.softmax(infer(model, torch.from_numpy(x), batch_size, "cpu", trial), dim=1).numpy()


def members_of(trials: pd.DataFrame, config: pd.Series) -> pd.DataFrame:
    """A ranked config's trials (its seeds and folds), best val macro-F1 first (ties: the ranked
    trials' order): the first is the config's single best trial."""
    mine = trials[trials["trial_id"].isin(str(config["trial_ids"]).split(","))]
    return mine.sort_values(f"best_{RANK_METRIC}", ascending=False, kind="stable")


def kept_members(results, config: pd.Series, notes: list[str] | None = None):
    """(trial row, checkpoint) of each of a ranked config's trials, best first (members_of), whose
    best-epoch checkpoint was kept and reads safely; with `notes`, each one left out is named there
    when the config has others."""
    members = members_of(results.trials, config)
    for _, trial in members.iterrows():
        saved = results.checkpoint(trial["trial_id"], int(trial["best_epoch"]), float(trial[f"best_{RANK_METRIC}"]), notes)
        if saved is not None:
            yield trial, saved
        elif notes is not None and len(members) > 1:
            notes.append(f"trial {trial['trial_id']}: its best epoch's checkpoint was not kept, so the ensemble of its "
                         "config leaves it out")


def _member(saved: dict, trial_id: str) -> dict:
    return {"model": saved["model"], "trial": saved["trial"], "model_package": saved.get("model_package"), "trial_id": str(trial_id),
            "epoch": int(saved["metrics"]["epoch"]), "metrics": saved["metrics"]}


def export_best_model(results, notes: list[str] | None = None) -> tuple[str | None, int]:
    """Write best_model.pt into the experiment folder of `results` (ecg_ray.results.store.results.Results):
    (its path, its members); (None, 0) when no
    checkpoint of the best config was kept (or each is damaged: named in `notes`).

    A config of one trial gives that trial's best epoch (format 1). A config of several (seeds,
    folds) gives their ensemble (format 2: every member at its best val epoch, predicting the mean
    of their class probabilities), and best_trial_model.pt beside it holds its single best trial.
    """
    import io

    import torch

    from ecg_ray.results.tables.ranking import rank_configs

    exp = results.state
    members = [(trial["trial_id"], saved) for trial, saved in kept_members(results, rank_configs(results.trials).iloc[0], notes)]
    if not members:
        return None, 0
    best_id, best = members[0]
    model = {
        "format": MODEL_FORMAT,
        **_member(best, best_id),
        "data_settings": best["data_settings"],
        "data_hash": best["data_hash"],
        "versions": {"trained": best["versions"], "exported": provenance.library_versions()},
        "experiment": exp.path,
    }
    files = {exp.best_model: model}
    if len(members) > 1:
        files[exp.best_trial_model] = model
        files[exp.best_model] = {k: v for k, v in model.items() if k not in ("model", "metrics", "epoch")} | {
            "format": ENSEMBLE_FORMAT, "members": [_member(saved, key) for key, saved in members],
            "combine": "mean of the members' class probabilities"}
    else:
        exp.remove_file(exp.best_trial_model)  # an earlier run's, of another best config
    for path, content in files.items():
        buf = io.BytesIO()
        torch.save(content, buf)
        exp.write_bytes(path, buf.getvalue())
    return exp.best_model, len(members)


def load_model(path: str) -> tuple[list, dict]:
    """(its models in eval mode: one, or an ensemble's members; the saved dict) from a best_model.pt
    or best_trial_model.pt (a local path or a URI), without running code from it."""
    import io

    import torch

    check_scheme(path, "The model file")
    data = storage.read_optional(storage.expand(path))
    if data is None:
        raise DataError(f"Model file {path} does not exist. Pass the best_model.pt of an experiment folder.")
    try:
        saved = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:
        raise DataError(f"{path} is not a model file ecg_ray can load safely ({type(err).__name__}). "
                        "Pass the best_model.pt that `ecg-ray tune` wrote.") from None
    single = isinstance(saved, dict) and saved.get("format") == MODEL_FORMAT and "model" in saved
    ensemble = (isinstance(saved, dict) and saved.get("format") == ENSEMBLE_FORMAT and isinstance(saved.get("members"), list)
                and saved["members"] and all(isinstance(m, dict) and "model" in m for m in saved["members"]))
    if not (single or ensemble):
        raise DataError(f"{path} is not an ecg_ray best_model.pt (format {MODEL_FORMAT}, or {ENSEMBLE_FORMAT} for an "
                        "ensemble).")
    damaged = "The file is damaged or was edited: pass the best_model.pt that `ecg-ray tune` wrote."
    parts = saved["members"] if ensemble else [saved]
    needed = [("trial", dict), ("data_settings", dict)]
    missing = [k for k, kind in needed if not isinstance(saved.get(k), kind)]
    missing += [f"data_settings.{k}" for k in ("sampling_rate", "min_length")
                if isinstance(saved.get("data_settings"), dict) and k not in saved["data_settings"]]
    missing += [f"{'members[%d].' % i if ensemble else ''}{k}" for i, m in enumerate(parts) for k in ("model", "trial")
                if not isinstance(m.get(k), dict)]
    if missing:
        raise DataError(f"{path} lacks {', '.join(repr(k) for k in dict.fromkeys(missing))}, which every ecg_ray model file "
                        f"holds. {damaged}")
    for m in parts:  # a plug-in's model: its package must be installed here, and the message names it
        require(str(m["trial"].get("model", DEFAULT_MODEL)), m.get("model_package") or saved.get("model_package"), path)
    for i, m in enumerate(parts):
        try:
            TrialConfig(**m["trial"])
        except (TypeError, ValueError) as err:  # an unknown or invalid key: the recorded config, not the weights
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise DataError(f"{path}: the trial config it records{f' (member {i})' if ensemble else ''} is not one this "
                            f"ecg_ray knows ({why}); it was written by another version of ecg_ray, or edited. "
                            f"{damaged}") from None
    try:
        return [model_from(m) for m in parts], saved
    except (RuntimeError, KeyError, TypeError, ValueError) as err:  # load_state_dict's complaints
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise DataError(f"{path}: its weights do not fit the model its recorded trial config describes ({why}). "
                        f"{damaged}") from None


def member_probabilities(models: list, x: np.ndarray, trial: TrialConfig) -> np.ndarray:
    """(members, n, 4): each model's class probabilities (the ensemble predicts their mean)."""
    return np.stack([class_probabilities(m, x, trial.batch_size, trial) for m in models])


def read_inputs(path: str, settings: dict, trust_pickle: Sequence[str] = ()) -> tuple[RecordSet, bool]:
    """(records, whether labels are known) from a challenge folder, one record, a Parquet or a pickle file."""
    from ecg_ray.data.sources import frame_to_records, read_labelled_folder, read_records
    from ecg_ray.data.trust import check_named

    p = Path(path)
    fs = int(settings["sampling_rate"])
    if p.is_dir() and (p / "REFERENCE.csv").is_file():
        return read_labelled_folder(p, fs), True  # tune's rules: an unknown label is a bad record, never Normal
    if p.is_dir():
        listed = p / "RECORDS"
        names = listed.read_text().split() if listed.is_file() else sorted(h.stem for h in p.glob("*.hea"))
        labels, known = [0] * len(names), False
    elif p.suffix in (".mat", ".hea") or p.with_suffix(".hea").is_file():
        names, labels, known, p = [p.stem], [0], False, p.parent
    elif p.suffix in (".parquet", ".pq", ".pkl", ".pickle"):
        if not p.is_file():
            raise DataError(f"Input file {p} does not exist.")
        if p.suffix in (".pkl", ".pickle"):
            check_named([str(p)], trust_pickle, "predict's input")
        df = pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_pickle(p)
        known = "label" in getattr(df, "columns", [])
        if isinstance(df, pd.DataFrame) and not known:
            df = df.assign(label=0)
        return frame_to_records(df, p, fs), known
    else:
        raise DataError(f"Cannot read {path}: pass a challenge folder, a .mat/.hea record, a .parquet or a .pkl file.")
    if not names:
        raise DataError(f"{p} holds no records (no .hea files, no RECORDS list).")
    return read_records(p, names, labels, fs), known


def predict(model_path: str, input_path: str, trust_pickle: Sequence[str] = (), on_bad_record: str = "error") -> pd.DataFrame:
    """A table of record, predicted class and per-class probabilities (and the label when known)."""
    from ecg_ray.data.prepare import check_records, pad_or_trim
    from ecg_ray.training.loop import trial_length

    models, saved = load_model(model_path)
    settings = saved["data_settings"]
    records, known = read_inputs(input_path, settings, trust_pickle)
    cfg = DataConfig(min_length=settings["min_length"], on_bad_record=on_bad_record,
                     max_length=settings.get("max_length", max(DataConfig.max_length, settings["min_length"])),
                     sampling_rate=int(settings["sampling_rate"]),
                     min_peak_to_peak=settings.get("min_peak_to_peak", DataConfig.min_peak_to_peak),
                     max_abs_amplitude=settings.get("max_abs_amplitude", DataConfig.max_abs_amplitude))
    checked, dropped = check_records({"predict": records}, cfg, skip_option="--on-bad-record skip")
    rs = checked["predict"]
    if not len(rs):
        raise EcgRayError(f"No usable record in {input_path}" + (f" ({len(dropped)} skipped)" if dropped else "") + ".")
    trial = TrialConfig.from_dict(saved["trial"])
    x = pad_or_trim(rs.signals, trial_length(trial, settings))  # the centre window it trained on
    each = member_probabilities(models, x, trial)
    probs = each.mean(axis=0)
    pred = probs.argmax(1)
    out = pd.DataFrame({"record": rs.ids, "predicted": [LABEL_NAMES[i] for i in pred],
                        "predicted_class": [CLASS_NAMES[i] for i in pred]})
    for i, key in enumerate(CLASS_KEYS):
        out[f"p_{key}"] = probs[:, i]
    if len(models) > 1:  # an ensemble: the share of its members whose own prediction is the ensemble's
        out["agreement"] = (each.argmax(2) == pred).mean(axis=0)
    if known:
        out["label"] = [LABEL_NAMES[int(i)] for i in rs.labels]
    out.attrs["skipped"] = [{"record": record, "problem": problem} for _, record, problem in dropped]
    return out
