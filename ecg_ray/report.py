"""Results aggregator: experiment folder -> tidy tables -> ranked -> exported.

    ecg-ray report ~/ecg_ray_results/quick --format csv markdown json

Pure functions over the files Tune and ecg_ray wrote; nothing is re-run, so a
finished or an interrupted experiment reports the same way. Numbers stay
numbers until export, where only Markdown and LaTeX are rounded for reading.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ecg_ray.errors import ConfigError
from ecg_ray.storage import atomic_path, atomic_write_text, uri_fs

CONFIG_COLUMNS = ["lr", "hidden_size", "dropout", "optimizer", "batch_size", "epochs", "seed"]
CLASS_KEYS = ("N", "A", "O", "noisy")
EPOCH_COLUMNS = (
    ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "val_challenge_f1"]
    + [f"val_{m}_{k}" for m in ("f1", "precision", "recall") for k in CLASS_KEYS]
)
# Columns that say where and how fast a trial ran; they differ between identical runs.
RUN_COLUMNS = ["trial_id", "wall_time_s", "epoch_time_s", "node_id", "node_ids", "pid", "device", "status"]
STATUS_FILE = "trial_status.json"
EXPERIMENT_FILE = "ecg_ray_experiment.json"


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line of a killed run may be cut off; earlier lines are whole
    return rows


def _trial_dirs(exp_dir: Path) -> list[Path]:
    return sorted(p.parent for p in exp_dir.glob("*/params.json"))


def history(exp_dir: str | os.PathLike) -> pd.DataFrame:
    """Every epoch of every trial, one row each (the last report wins if an epoch was re-run)."""
    exp_dir = Path(exp_dir)
    frames = []
    for trial_dir in _trial_dirs(exp_dir):
        params = json.loads((trial_dir / "params.json").read_text())
        by_epoch: dict[int, dict] = {}
        for r in _read_jsonl(trial_dir / "result.json"):
            if "epoch" in r and "val_macro_f1" in r:
                by_epoch[int(r["epoch"])] = r
        for epoch in sorted(by_epoch):
            r = by_epoch[epoch]
            row = {"trial_id": r.get("trial_id", trial_dir.name)}
            row |= {k: params.get(k) for k in CONFIG_COLUMNS}
            row |= {k: r.get(k) for k in EPOCH_COLUMNS}
            cm = np.asarray(r.get("val_confusion", np.zeros((4, 4))), dtype=np.int64)
            row |= {f"cm_true{i}_pred{j}": int(cm[i, j]) for i in range(4) for j in range(4)}
            row |= {
                "epoch_time_s": r.get("epoch_time_s"),
                "time_total_s": r.get("time_total_s"),
                "node_id": r.get("node_id"),
                "data_hash": r.get("data_hash"),
            }
            frames.append(row)
    if not frames:
        return pd.DataFrame(columns=["trial_id", *CONFIG_COLUMNS, *EPOCH_COLUMNS])
    df = pd.DataFrame(frames)
    return df.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def _status(exp_dir: Path) -> dict:
    path = exp_dir / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


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
        best = g.loc[g["val_macro_f1"].idxmax()]  # first epoch reaching the best value
        last = g.iloc[-1]
        # No recorded end: a trial of an interrupted (or still running) experiment, unless it ran every epoch.
        st = status.get(trial_id, {}).get("status", "UNFINISHED")
        epochs_run = int(last["epoch"])
        row = {"trial_id": trial_id}
        row |= {k: best[k] for k in CONFIG_COLUMNS}
        row |= {
            "best_epoch": int(best["epoch"]),
            "best_val_macro_f1": float(best["val_macro_f1"]),
            "last_val_macro_f1": float(last["val_macro_f1"]),
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
        ["best_val_macro_f1", "val_loss", *CONFIG_COLUMNS],
        ascending=[False, True] + [True] * len(CONFIG_COLUMNS),
        kind="stable",
    ).reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


def build_report(exp_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ranked trials, per-epoch history) of an experiment folder."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise ConfigError(f"Experiment folder {exp_dir} does not exist. Pass the folder `ecg-ray tune` printed.")
    hist = history(exp_dir)
    scheduler = None
    meta_path = exp_dir / EXPERIMENT_FILE
    if meta_path.is_file():
        scheduler = json.loads(meta_path.read_text())["config"]["scheduler"]["name"]
    if hist.empty:
        raise ConfigError(f"{exp_dir} holds no finished epoch of any trial yet (no */result.json with metrics).")
    return rank_trials(hist, _status(exp_dir), scheduler), hist


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
DEFAULT_FORMATS = ("csv", "markdown", "json")


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
    "rank", "lr", "hidden_size", "dropout", "optimizer", "best_epoch", "best_val_macro_f1",
    "last_val_macro_f1", "val_challenge_f1", "val_acc", "epochs_run", "early_stopped", "wall_time_s",
]


def summary_text(trials: pd.DataFrame) -> str:
    """The ranked table as a person reads it in a terminal."""
    return to_markdown(trials[[c for c in SUMMARY_COLUMNS if c in trials.columns]])


def fetch_experiment(path: str) -> tuple[str, tempfile.TemporaryDirectory | None]:
    """A local folder for `path`; a bucket URI (s3://, gs://) is copied to a temporary folder first."""
    if "://" not in path:
        return os.path.expanduser(path), None
    import pyarrow.fs

    fs, root = uri_fs(path)
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        raise ConfigError(f"Experiment folder {path} does not exist. Pass the folder `ecg-ray tune` printed.")
    tmp = tempfile.TemporaryDirectory(prefix="ecg_ray_report_")
    selector = pyarrow.fs.FileSelector(root, recursive=True)
    for info in fs.get_file_info(selector):
        rel = info.path[len(root) :].lstrip("/")
        if info.type != pyarrow.fs.FileType.File or rel.startswith(("train_runs/", "report/")):
            continue  # checkpoints and old tables are not needed for the tables
        dest = Path(tmp.name, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src:
            dest.write_bytes(src.read())
    return tmp.name, tmp


def write_report(exp_dir: str, out_dir: str | None = None, formats=DEFAULT_FORMATS) -> tuple[pd.DataFrame, list[str]]:
    """Build and export the tables of an experiment (local folder or bucket URI).

    The default output folder is <exp_dir>/report, in the bucket too for a URI.
    Returns the ranked trials table and the files written.
    """
    local, tmp = fetch_experiment(exp_dir)
    try:
        trials, hist = build_report(local)
        upload = tmp is not None and out_dir is None
        if out_dir is None:
            out_dir = os.path.join(local, "report")
        written = [str(p) for p in export({"trials": trials, "history": hist}, out_dir, formats)]
        if upload:
            fs, root = uri_fs(exp_dir)
            fs.create_dir(f"{root}/report", recursive=True)
            for path in written:
                key = f"{root}/report/{Path(path).name}"
                with fs.open_output_stream(key) as dst:
                    dst.write(Path(path).read_bytes())
            written = [f"{exp_dir.rstrip('/')}/report/{Path(p).name}" for p in written]
        return trials, written
    finally:
        if tmp is not None:
            tmp.cleanup()
