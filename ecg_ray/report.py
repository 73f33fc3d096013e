"""Results aggregator: experiment folder -> tidy tables -> ranked -> exported.

    ecg-ray report ~/ecg_ray_results/quick --format csv markdown json

Pure functions over the files Tune and ecg_ray wrote; nothing is re-run, so a
finished or an interrupted experiment reports the same way. Numbers stay
numbers until export, where only Markdown and LaTeX are rounded for reading.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ecg_ray.config import DEFAULT_EXPORT_FORMATS
from ecg_ray.errors import ConfigError
from ecg_ray.expdir import ExperimentDir
from ecg_ray.schema import (
    CLASS_KEYS, CONFIG_COLUMNS, CONFUSION, EPOCH_COLUMNS, NUM_CLASSES, RANK_METRIC, RUN_COLUMNS, TRIAL_KEY,
    confusion_columns,
)
from ecg_ray.storage import atomic_path, atomic_write_text


def _as_dir(exp_dir) -> ExperimentDir:
    return exp_dir if isinstance(exp_dir, ExperimentDir) else ExperimentDir.parse(exp_dir)


def _runs_by_trial(exp: ExperimentDir) -> dict[str, list[tuple[dict, list[dict]]]]:
    """trial key -> [(params, epoch results)] of each Tune run of that trial, in the order they ran.

    A resumed trial ran in two Tune runs, so it has two Tune folders under one trial key.
    """
    runs: dict[str, list[tuple[float, dict, list[dict]]]] = {}
    for folder in exp.trials():
        results = [r for r in folder.results if "epoch" in r and RANK_METRIC in r]
        if results:
            key = folder.params.get(TRIAL_KEY) or results[0].get("trial_id", folder.folder)
            runs.setdefault(key, []).append((results[0].get("timestamp", 0), folder.params, results))
    return {key: [(p, r) for _, p, r in sorted(parts, key=lambda part: part[0])] for key, parts in runs.items()}


def history(exp_dir: str | os.PathLike | ExperimentDir) -> pd.DataFrame:
    """Every epoch of every trial of a local folder, one row each (the last report wins if an epoch was re-run).

    time_total_s runs on across the Tune runs of a resumed trial.
    """
    frames = []
    for key, runs in _runs_by_trial(_as_dir(exp_dir)).items():
        by_epoch: dict[int, tuple[dict, dict, float]] = {}
        offset = 0.0
        for params, results in runs:
            for r in results:
                by_epoch[int(r["epoch"])] = (params, r, offset)
            offset += results[-1].get("time_total_s") or 0.0
        for epoch in sorted(by_epoch):
            params, r, offset = by_epoch[epoch]
            row = {"trial_id": key}
            row |= {k: params.get(k) for k in CONFIG_COLUMNS}
            row |= {k: r.get(k) for k in EPOCH_COLUMNS}
            cm = np.asarray(r.get(CONFUSION, np.zeros((NUM_CLASSES, NUM_CLASSES))), dtype=np.int64)
            row |= dict(zip(confusion_columns(), (int(v) for v in cm.ravel())))
            row |= {
                "epoch_time_s": r.get("epoch_time_s"),
                "time_total_s": r["time_total_s"] + offset if r.get("time_total_s") is not None else None,
                "node_id": r.get("node_id"),
                "data_hash": r.get("data_hash"),
            }
            frames.append(row)
    if not frames:
        return pd.DataFrame(columns=["trial_id", *CONFIG_COLUMNS, *EPOCH_COLUMNS])
    df = pd.DataFrame(frames)
    return df.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


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


def build_report(exp_dir: str | os.PathLike | ExperimentDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ranked trials, per-epoch history) of a local experiment folder."""
    exp = _as_dir(exp_dir)
    if not os.path.isdir(exp.path):
        raise ConfigError(f"Experiment folder {exp_dir} does not exist. Pass the folder `ecg-ray tune` printed.")
    hist = history(exp)
    if hist.empty:
        raise ConfigError(f"{exp_dir} holds no finished epoch of any trial yet (no */result.json with metrics).")
    return rank_trials(hist, exp.read_statuses(), exp.scheduler_name()), hist


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The table without the columns that say where/when a run happened: equal for equal runs."""
    return df.drop(columns=[c for c in RUN_COLUMNS + ["time_total_s"] if c in df.columns]).reset_index(drop=True)


# --- export ------------------------------------------------------------------


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else (f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}")
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def to_latex(df: pd.DataFrame) -> str:
    def esc(s: str) -> str:
        return str(s).replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")

    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\hline", " & ".join(esc(c) for c in df.columns) + r" \\", r"\hline"]
    lines += [" & ".join(esc(_fmt(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _write_text(fn):
    def write(df: pd.DataFrame, dest: Path) -> None:
        atomic_write_text(dest, fn(df))

    return write


def _write_csv(df: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        df.to_csv(tmp, index=False)


def _write_parquet(df: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        df.to_parquet(tmp, index=False)


EXPORTERS = {
    "csv": (".csv", _write_csv),
    "markdown": (".md", _write_text(to_markdown)),
    "json": (".json", _write_text(lambda df: df.to_json(orient="records", indent=2) + "\n")),
    "parquet": (".parquet", _write_parquet),
    "latex": (".tex", _write_text(to_latex)),
}
DEFAULT_FORMATS = DEFAULT_EXPORT_FORMATS


def export(tables: dict[str, pd.DataFrame], out_dir: str | os.PathLike, formats=DEFAULT_FORMATS) -> list[Path]:
    """Write each table in each format to out_dir/<table>.<ext>, each file atomically."""
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown:
        raise ConfigError(f"Unknown export format(s) {unknown}. Choose from {', '.join(EXPORTERS)}.")
    out_dir = Path(out_dir)
    written = []
    for name, df in tables.items():
        for fmt in formats:
            ext, write = EXPORTERS[fmt]
            dest = out_dir / f"{name}{ext}"
            write(df, dest)
            written.append(dest)
    return written


SUMMARY_COLUMNS = [
    "rank", "lr", "hidden_size", "dropout", "optimizer", "best_epoch", f"best_{RANK_METRIC}",
    f"last_{RANK_METRIC}", "val_challenge_f1", "val_acc", "epochs_run", "early_stopped", "wall_time_s",
]


def summary_text(trials: pd.DataFrame) -> str:
    """The ranked table as a person reads it in a terminal."""
    return to_markdown(trials[[c for c in SUMMARY_COLUMNS if c in trials.columns]])


def write_report(exp_dir: str, out_dir: str | None = None, formats=DEFAULT_FORMATS) -> tuple[pd.DataFrame, list[str]]:
    """Build and export the tables of an experiment (local folder or bucket URI).

    The default output folder is <exp_dir>/report, in the bucket too for a URI.
    Returns the ranked trials table and the files written.
    """
    exp = _as_dir(exp_dir)
    with exp.local_view() as local:
        trials, hist = build_report(local)
        target = Path(out_dir) if out_dir is not None else Path(local.report_dir)
        written = [str(p) for p in export({"trials": trials, "history": hist}, target, formats)]
        if exp.is_uri and out_dir is None:
            written = exp.publish(written)
        return trials, written
