"""The history table: every epoch of every trial of an experiment folder, one row each, from the
result files Tune wrote (a resumed trial's runs joined, damage named in `problems`; under grouped
ASHA each stopped config cut at the rung its decision saw).

    python -c "from ecg_ray.results.tables.history import history; print(history('~/ecg_ray_results/quick'))"
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from ecg_ray.errors import ConfigError
from ecg_ray.results.store.folder import DamagedFile, ExperimentDir, TrialFiles
from ecg_ray.results.store.state import FolderState
from ecg_ray.schema import ADDED_CONFIG_KEYS, CONFIG_COLUMNS, CONFUSION, EPOCH_COLUMNS, NUM_CLASSES, RANK_METRIC, TIMING_KEYS, TRIAL_KEY, confusion_columns


def _epoch_results(folder, problems: list[str]) -> list[dict]:
    """The epoch reports of one Tune folder; a report that lacks metrics is named in `problems`."""
    out = []
    for lineno, r in folder.results:
        if "epoch" not in r:
            continue
        where = f"{folder.results_file}, line {lineno} (epoch {r['epoch']})"
        missing = [k for k in (*EPOCH_COLUMNS, CONFUSION) if k not in r]
        if RANK_METRIC in missing:
            problems.append(f"{where} lacks {RANK_METRIC}; that epoch was skipped")
            continue
        if not _finite(r[RANK_METRIC]):  # NaN is never a best epoch: it would silently rank on the others
            problems.append(f"{where}: {RANK_METRIC} is {r[RANK_METRIC]!r}, not a number in 0..1; that epoch was skipped")
            continue
        if missing:
            problems.append(f"{where} lacks {', '.join(missing)}; left empty in the tables")
        # Scores cannot be NaN (an F1 of no prediction is 0); a loss can (a diverged run), and is shown as it is.
        broken = [k for k in EPOCH_COLUMNS if k in r and not k.endswith("loss") and k != "epoch" and not _finite(r[k])]
        if broken:
            problems.append(f"{where}: {', '.join(broken)} not a number; shown as recorded")
        out.append(r)
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def unreported_trials(exp: ExperimentDir, folders: list[TrialFiles], hist: pd.DataFrame, statuses: dict,
                problems: list[str]) -> None:
    """Name each trial trial_status.json records epochs of that the result files lack (an emptied
    or deleted result.json would otherwise drop a finished trial from every table without a word)."""
    have = hist.groupby("trial_id")["epoch"].max().to_dict() if not hist.empty else {}
    files: dict[str, list[TrialFiles]] = {}
    for folder in folders:
        files.setdefault(folder.params.get(TRIAL_KEY), []).append(folder)
    for key, st in sorted(statuses.items()):
        recorded = int(st.get("last_epoch") or 0)
        if recorded <= have.get(key, 0):
            continue
        state = "; ".join(f"{f.results_file} is {'missing' if f.results_size is None else 'empty' if f.results_size == 0 else 'short'}"
                          for f in files.get(key, [])) or f"no Tune trial folder of {key} is left"
        if key not in have:
            problems.append(f"trial {key} is damaged: {exp.status_file} records {recorded} epoch(s) ({st.get('status')}) "
                            f"but {state}; it is left out of every table")
        else:
            problems.append(f"trial {key} is damaged: {exp.status_file} records {recorded} epoch(s) but its result files "
                            f"hold {have[key]} ({state}); the tables show those {have[key]}")


def _runs_by_trial(folders: list[TrialFiles], problems: list[str]) -> dict[str, list[tuple[dict, list[dict]]]]:
    """trial key -> [(params, epoch results)] of each Tune run of that trial, in the order they ran.

    A resumed trial ran in two Tune runs, so it has two Tune folders under one trial key.
    Damaged lines are named in `problems`, unless the trial ran again afterwards and no
    epoch of it is missing (the cut-off line of a killed run, re-run by the resume).
    """
    runs: dict[str, list[tuple[float, object, list[dict]]]] = {}
    for folder in folders:
        results = _epoch_results(folder, problems)
        if results or folder.damaged:
            key = folder.params.get(TRIAL_KEY) or (results[0].get("trial_id") if results else folder.folder)
            runs.setdefault(key, []).append((results[0].get("timestamp", 0) if results else 0, folder, results))
    out = {}
    for key, parts in runs.items():
        parts.sort(key=lambda part: part[0])
        epochs = {int(r["epoch"]) for _, _, results in parts for r in results}
        complete = bool(epochs) and epochs == set(range(1, max(epochs) + 1))
        for i, (_, folder, _) in enumerate(parts):
            if not (complete and i < len(parts) - 1):
                problems.extend(folder.damaged)
        if epochs and not complete:
            gaps = sorted(set(range(1, max(epochs) + 1)) - epochs)
            problems.append(f"trial {key}: epoch(s) {', '.join(map(str, gaps))} missing from its result files")
        out[key] = [(folder.params, results) for _, folder, results in parts if results]
    return out


def history(exp_dir: str | os.PathLike | ExperimentDir, problems: list[str] | None = None) -> pd.DataFrame:
    """Every epoch of every trial of a folder (a path, a URI, or a FolderState already read), one row
    each (the last report wins if an epoch was re-run).

    time_total_s runs on across the Tune runs of a resumed trial. What could not be read
    is named in `problems`.
    """
    problems = [] if problems is None else problems
    return history_of(FolderState.load(exp_dir).trials(problems), problems)


def history_of(folders: list[TrialFiles], problems: list[str]) -> pd.DataFrame:
    """The history (see `history`) of Tune trial folders already read."""
    frames = []
    for key, runs in _runs_by_trial(folders, problems).items():
        by_epoch: dict[int, tuple[dict, dict, float]] = {}
        offset = 0.0
        for params, results in runs:
            for r in results:
                by_epoch[int(r["epoch"])] = (params, r, offset)
            offset += results[-1].get("time_total_s") or 0.0
        for epoch in sorted(by_epoch):
            params, r, offset = by_epoch[epoch]
            row = {"trial_id": key}
            row |= {k: params.get(k, ADDED_CONFIG_KEYS.get(k)) for k in CONFIG_COLUMNS}
            row |= {k: r.get(k) for k in EPOCH_COLUMNS}
            cm = np.asarray(r.get(CONFUSION, np.zeros((NUM_CLASSES, NUM_CLASSES))), dtype=np.int64)
            row |= dict(zip(confusion_columns(), (int(v) for v in cm.ravel())))
            row |= {
                "epoch_time_s": r.get("epoch_time_s"),
                "time_total_s": r["time_total_s"] + offset if r.get("time_total_s") is not None else None,
                "node_id": r.get("node_id"),
                "device": r.get("device"),
                "data_hash": r.get("data_hash"),
                **{k: r.get(k) for k in TIMING_KEYS},
            }
            frames.append(row)
    if not frames:
        return pd.DataFrame(columns=["trial_id", *CONFIG_COLUMNS, *EPOCH_COLUMNS])
    df = pd.DataFrame(frames)
    return df.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def at_grouped_stops(exp: ExperimentDir, hist: pd.DataFrame, statuses: dict) -> pd.DataFrame:
    """Under grouped ASHA, each stopped config's epochs up to the rung it was stopped at: what the
    decision saw (a trial whose config waited for the configs before it may have trained on a little
    longer, depending on timing). Every other history as it is."""
    from ecg_ray.results.analysis.rungs import group_of, key_order, plan, rung_epochs

    try:
        cfg = exp.recorded_config()
    except (DamagedFile, ConfigError):
        return hist  # named elsewhere; without the config no grouping is known
    if cfg is None or not cfg.groups_trials or hist.empty:
        return hist
    group = {key: group_of({c: g[c].iloc[0] for c in CONFIG_COLUMNS if c in g}) for key, g in hist.groupby("trial_id")}
    members: dict[str, list[str]] = {}
    for key in sorted(group, key=key_order):
        members.setdefault(group[key], []).append(key)
    epochs = {group[k]: int(v) for k, v in hist.groupby("trial_id")["epochs"].max().items()}
    scores = {k: dict(zip(g["epoch"].astype(int), g[RANK_METRIC].astype(float))) for k, g in hist.groupby("trial_id")}
    failed = {k for k, st in statuses.items() if st.get("status") == "ERROR"}
    rungs = rung_epochs(min(cfg.scheduler.grace_period, cfg.epochs), cfg.scheduler.reduction_factor, cfg.epochs)
    stops = plan(list(members), members, scores, rungs, cfg.scheduler.reduction_factor, failed, cfg.replicates, epochs)
    past = [stops.get(group[k], 10**9) < e for k, e in zip(hist["trial_id"], hist["epoch"])]
    return hist[~np.asarray(past, dtype=bool)].reset_index(drop=True)
