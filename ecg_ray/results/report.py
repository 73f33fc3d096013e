"""Results aggregator: experiment folder -> tidy tables -> ranked -> exported.

    ecg-ray report ~/ecg_ray_results/quick --format csv markdown json

Pure functions over the files Tune and ecg_ray wrote; nothing is re-run, so a
finished or an interrupted experiment reports the same way. Numbers stay
numbers until export, where only Markdown and LaTeX are rounded for reading.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ecg_ray.config import DEFAULT_EXPORT_FORMATS, TrialConfig
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray import storage
from ecg_ray.results.folder import DamagedFile, ExperimentDir, TrialFiles
from ecg_ray.results.results import Results
from ecg_ray.results.state import FolderState
from ecg_ray.schema import (
    CLASS_KEYS, CONFIG_COLUMNS, CONFUSION, EPOCH_COLUMNS, NUM_CLASSES, RANK_METRIC, RUN_COLUMNS, TIMING_KEYS, TRIAL_KEY,
    confusion_columns,
)
from ecg_ray.results.tables import (  # noqa: F401  (re-exported: the report's column names)
    CONFIG_SUMMARY_COLUMNS, REPLICATE_KEYS, SUMMARY_COLUMNS, TEST_SUMMARY_COLUMNS, varying_keys, with_varying_knobs,
)
from ecg_ray.results.stats import ALPHA, holm, mean_sd_ci, paired_p_value
from ecg_ray.storage import atomic_path, atomic_write_text


def _as_dir(exp_dir) -> FolderState:
    """The folder read once (a FolderState as it is; a path, URI or ExperimentDir loaded)."""
    return FolderState.load(exp_dir if isinstance(exp_dir, ExperimentDir) else ExperimentDir.parse(exp_dir))


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


def _unreported(exp: ExperimentDir, folders: list[TrialFiles], hist: pd.DataFrame, statuses: dict,
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
    return history_of(_as_dir(exp_dir).trials(problems), problems)


# Trial keys added after folders were written: an older folder's trials trained their defaults.
ADDED_KEYS = {"model": TrialConfig.model, "model_args": TrialConfig.model_args}


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
            row |= {k: params.get(k, ADDED_KEYS.get(k)) for k in CONFIG_COLUMNS}
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


def _at_grouped_stops(exp: ExperimentDir, hist: pd.DataFrame, statuses: dict) -> pd.DataFrame:
    """Under grouped ASHA, each stopped config's epochs up to the rung it was stopped at: what the
    decision saw (a trial whose config waited for the configs before it may have trained on a little
    longer, depending on timing). Every other history as it is."""
    from ecg_ray.results.rungs import group_of, key_order, plan, rung_epochs

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
    (fewer than two shared pairs: no test). See ecg_ray.results.stats.
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


def read_results(folder) -> Results:
    """What `folder` (a path, a URI, an ExperimentDir, or the FolderState a command holds) left, read
    once and ranked. Raises ConfigError when no epoch of any trial has finished."""
    state = _as_dir(folder)
    problems: list[str] = []
    trials, hist = build_report(state, problems)
    return Results(state, trials, hist, problems)


def ranked_trials(exp_dir: str, problems: list[str]) -> pd.DataFrame:
    """The ranked trials table of a folder or bucket URI, writing nothing (damage named in `problems`)."""
    return build_report(exp_dir, problems)[0]


def build_report(exp_dir: str | os.PathLike | ExperimentDir, problems: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ranked trials, per-epoch history) of an experiment folder (a path, a URI, or a FolderState).

    Files that could not be read, and what was skipped because of them, are named in `problems`.
    """
    problems = [] if problems is None else problems
    exp = _as_dir(exp_dir)
    if not exp.found:
        raise ConfigError(f"Experiment folder {exp_dir} does not exist. Pass the folder `ecg-ray tune` printed.")
    folders = exp.trials(problems)
    hist = history_of(folders, problems)
    statuses, scheduler = {}, None
    try:
        statuses = exp.read_statuses()
    except DamagedFile as err:
        problems.append(f"{err} Trial statuses are unknown: trials that ran every epoch count as finished")
    _unreported(exp, folders, hist, statuses, problems)
    hist = _at_grouped_stops(exp, hist, statuses)
    if hist.empty and not exp.exists():  # no record either: another kind of folder
        from ecg_ray.results.folder import not_an_experiment

        raise ConfigError(f"{exp.path} is not an experiment folder: {not_an_experiment(exp.path)}.")
    if hist.empty:
        raise ConfigError(f"{exp_dir} holds no finished epoch of any trial yet (no */result.json with metrics)."
                          + (f" Problems: {'; '.join(problems)}" if problems else ""))
    try:
        scheduler = exp.scheduler_name()
    except DamagedFile as err:
        problems.append(f"{err} The scheduler is unknown, so no early stop is attributed to ASHA")
    return rank_trials(hist, statuses, scheduler), hist


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The table without the columns that say where/when a run happened: equal for equal runs."""
    return df.drop(columns=[c for c in RUN_COLUMNS + ["time_total_s"] if c in df.columns]).reset_index(drop=True)


# --- export ------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else (f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4f}")
    return str(v)


# Counts and indices: a column of them turns float where a row has none (an ensemble's seed, a run
# without folds), and then reads 42.0000; printed as whole numbers wherever every value is one.
WHOLE_COLUMNS = {"seed", "fold", "epoch", "best_epoch", "best_val_epoch", "last_epoch", "epochs", "rank", "config_rank",
                 "n_test", "n_seeds", "n_folds", "n_trials", "hidden_size", "batch_size", "params", "iteration"}


def _cells(df: pd.DataFrame) -> list[list[str]]:
    """Every cell as text: whole-number columns (WHOLE_COLUMNS) without decimals, the rest by _fmt."""
    columns = []
    for c in df.columns:
        values = df[c]
        numeric = pd.api.types.is_float_dtype(values)
        finite = values[np.isfinite(values)] if numeric else values
        if c in WHOLE_COLUMNS and numeric and (finite == np.floor(finite)).all():
            columns.append(["" if not np.isfinite(v) else str(int(v)) for v in values])
        else:
            columns.append([_fmt(v) for v in values])
    return [list(row) for row in zip(*columns)] if columns else [[] for _ in range(len(df))]


# What would be markup in a Markdown cell (HTML, a link, code, emphasis, a column break), and in LaTeX.
_MD_SPECIAL = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "\\": "\\\\", "`": "\\`", "*": "\\*",
                             "[": "\\[", "]": "\\]", "\n": " ", "\r": " "})
_TEX_SPECIAL = str.maketrans({"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                              "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\n": " "})


def md_escape(text) -> str:
    """Text as a Markdown table cell shows it: nothing in it becomes HTML, a link, code or a new column."""
    return str(text).translate(_MD_SPECIAL)


def tex_escape(text) -> str:
    return str(text).translate(_TEX_SPECIAL)


def to_markdown(df: pd.DataFrame, notes: list[str] = ()) -> str:
    head = "| " + " | ".join(md_escape(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in _cells(df)]
    return "\n".join([head, rule, *body]) + "\n" + "".join(f"\n> **Problem:** {md_escape(n)}\n" for n in notes)


def to_latex(df: pd.DataFrame, notes: list[str] = ()) -> str:
    esc = tex_escape
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\hline", " & ".join(esc(c) for c in df.columns) + r" \\", r"\hline"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in _cells(df)]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n" + _tex_notes(notes)


def _tex_notes(notes) -> str:
    """Problems as LaTeX comments: seen by whoever \\input{}s the table, never printed in the paper."""
    return "".join("% ecg-ray problem: " + " ".join(str(n).split()) + "\n" for n in notes)


def configs_to_latex(configs: pd.DataFrame, notes: list[str] = ()) -> str:
    """The configs table for a paper: booktabs, mean ± sd cells, the best in bold, ties marked, a caption."""
    esc = tex_escape

    keys = varying_keys(configs) or ["lr"]
    seeds = config_seeds(configs)
    runs, k = runs_per_config(configs), config_folds(configs)
    several = bool((runs > 1).any())
    m, c = f"best_{RANK_METRIC}", "val_challenge_f1"

    def cell(row, metric: str, bold: bool = False) -> str:
        text = f"{row[f'{metric}_mean']:.3f}" + (f" $\\pm$ {row[f'{metric}_sd']:.3f}" if runs[row.name] > 1 else "")
        return rf"\textbf{{{text}}}" if bold else text

    head = [esc(k) for k in keys] + ["$n$", "val macro-F1", "95\\% CI", "challenge F1"]
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{'l' * len(keys)}rrrr}}", r"\toprule",
             " & ".join(head) + r" \\", r"\midrule"]
    for _, row in configs.iterrows():
        best = row["tied_with_best"] == "best"
        mark = "$^\\dagger$" if row["tied_with_best"] == "yes" else ""
        ci = f"[{row[f'{m}_ci_low']:.3f}, {row[f'{m}_ci_high']:.3f}]" if runs[row.name] > 1 else "--"
        values = [esc(_fmt(row[key])) for key in keys] + [str(runs[row.name]), cell(row, m, best) + mark, ci, cell(row, c)]
        lines.append(" & ".join(values) + r" \\")
    seeds_text = ", ".join(map(str, seeds))
    if k:
        caption = (f"Best validation macro-F1 and challenge F1 (mean F1 of N, A, O) per configuration by {k}-fold "
                   f"cross-validation, mean $\\pm$ sd over the {k} folds" + (f" and seeds {seeds_text}" if len(seeds) > 1
                                                                          else f" (seed {seeds_text})")
                   + "; 95\\% CI: mean $\\pm$ $t_{0.975,n-1}\\,$sd$/\\sqrt{n}$ over the $n$ trials. Best mean in bold; "
                   "$^\\dagger$: statistically indistinguishable from the best (two-sided paired $t$-test by seed and fold, "
                   "Holm-corrected, $p \\geq 0.05$).")
    elif several:
        caption = (f"Best validation macro-F1 and challenge F1 (mean F1 of N, A, O) per configuration, mean $\\pm$ sd "
                   f"over seeds {seeds_text}; 95\\% CI: mean $\\pm$ $t_{{0.975,n-1}}\\,$sd$/\\sqrt{{n}}$. Best mean "
                   "in bold; $^\\dagger$: statistically indistinguishable from the best (two-sided paired $t$-test by "
                   "seed, Holm-corrected, $p \\geq 0.05$).")
    else:
        caption = (f"Best validation macro-F1 and challenge F1 (mean F1 of N, A, O) per configuration: one run each "
                   f"(seed {seeds_text}), so no confidence interval and no tie test. Best in bold.")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}"]
    return "\n".join(lines) + "\n" + _tex_notes(notes)


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


# The text formats that carry the problems found reading the folder under the table.
WITH_NOTES = {"markdown": to_markdown, "latex": to_latex}
PROBLEMS_FILE = "problems.txt"  # beside the tables, whatever their formats; absent when there were none


def export(tables: dict[str, pd.DataFrame], out_dir: str | os.PathLike, formats=DEFAULT_FORMATS,
           notes: list[str] = ()) -> list[Path]:
    """Write each table in each format to out_dir/<table>.<ext>, each file atomically.

    `notes` (the problems found reading the folder) end each Markdown and LaTeX table and fill
    out_dir/problems.txt, so a table copied into a paper still says what it leaves out.
    """
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown:
        raise ConfigError(f"Unknown export format(s) {unknown}. Choose from {', '.join(EXPORTERS)}.")
    out_dir = Path(out_dir)
    written = []
    for name, df in tables.items():
        for fmt in formats:
            ext, write = EXPORTERS[fmt]
            dest = out_dir / f"{name}{ext}"
            if notes and fmt in WITH_NOTES:
                atomic_write_text(dest, WITH_NOTES[fmt](df, notes))
            else:
                write(df, dest)
            written.append(dest)
    problems_file = out_dir / PROBLEMS_FILE
    if notes:
        atomic_write_text(problems_file, "".join(f"{n}\n" for n in notes))
        written.append(problems_file)
    else:
        problems_file.unlink(missing_ok=True)  # a repaired folder's old list
    return written


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


CONSOLE_KEYS = 6  # config keys a terminal table shows; the files have every one


def console_columns(columns: list[str], table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(columns a terminal shows: `columns`' metrics with the config keys that vary, at most
    CONSOLE_KEYS of them; the varying keys left out). A key that does not vary is left out too
    (it is in the experiment file); with none varying, the first of `columns`' keys stays."""
    keys = varying_keys(table)
    metrics = [c for c in columns if c in table.columns and c not in CONFIG_COLUMNS]
    shown = keys[:CONSOLE_KEYS] or [c for c in columns if c in CONFIG_COLUMNS and c in table.columns][:1]
    at = 1 if metrics[:1] == ["rank"] else 0
    return metrics[:at] + shown + metrics[at:], keys[CONSOLE_KEYS:]


def summary_text(trials: pd.DataFrame) -> str:
    """The ranked tables as a person reads them in a terminal: trials, then configs over seeds."""
    cols, hidden = console_columns(SUMMARY_COLUMNS, trials)
    text = to_markdown(trials[cols])
    if hidden:
        text += (f"\n{len(hidden)} more varying key(s) in trials.csv and configs.csv: {', '.join(hidden)} "
                 f"(the {CONSOLE_KEYS} first in config order are shown).\n")
    configs = rank_configs(trials)
    text += f"\n{seeds_note(configs)}\n"
    if (runs_per_config(configs) > 1).any():
        text += "\n" + to_markdown(configs[console_columns(CONFIG_SUMMARY_COLUMNS, configs)[0]])
    return text




class PartialReport(EcgRayError):
    """The experiment folder is damaged; tables would leave out what could not be read."""

    def __init__(self, exp_dir: str, problems: list[str]):
        super().__init__(
            f"{len(problems)} problem(s) reading {exp_dir}: " + "; ".join(problems) + ". No table was written. "
            "Repair or remove the named files, or build the tables from what is readable with --allow-partial."
        )
        self.problems = problems


def write_report(source, out_dir: str | None = None, formats=DEFAULT_FORMATS,
                 allow_partial: bool = False) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Build and export the tables, figures and index.html of an experiment.

    `source`: the Results a run already holds (ecg_ray.results.results), or a folder (a local
    path, a URI, an ExperimentDir) read once here. The default output folder is <folder>/report,
    in the bucket too for a URI; `out_dir` may be a URI as well. A damaged folder raises
    PartialReport before anything is written, unless `allow_partial`. Returns the ranked trials
    table, the files written, and the problems found.
    """
    results = source if isinstance(source, Results) else read_results(source)
    exp, trials, hist = results.state, results.trials, results.hist
    problems = list(results.problems)
    if problems and not allow_partial:
        raise PartialReport(exp.path, problems)
    dest = str(out_dir) if out_dir is not None else exp.report_dir
    written = storage.write_folder(dest, lambda target: _write_tables(exp, trials, hist, problems, target, formats),
                                   stale=tuple(f"importance{ext}" for ext, _ in EXPORTERS.values()))
    return trials, written, problems


def _write_tables(exp: FolderState, trials: pd.DataFrame, hist: pd.DataFrame, problems: list[str], target: Path,
                  formats) -> list[str]:
    """Write the report's files into the local folder `target`; returns their paths."""
    test = test_table(exp, problems)
    record = _read_or_note(exp.read_record, {}, problems)
    splits, runs = _read_or_note(exp.read_splits, {}, problems), _read_or_note(exp.read_runs, [], problems)
    costs = _read_or_note(exp.read_costs, None, problems)
    configs, pareto, weights, analysis_notes = analyse(trials, hist, costs, record, _read_or_note(exp.read_oof, None, problems))
    from ecg_ray.results.importance import MIN_CONFIGS

    if weights is None and len(configs) >= MIN_CONFIGS:  # enough configs, yet no estimate: the shape of the scores says why
        print(f"[ecg-ray] report: {analysis_notes['importance']}", flush=True)
    notes = list(problems)  # every problem is known now: each table carries them all
    tables = {"trials": trials, "history": hist} | ({"test": test} if test is not None else {})
    tables |= {"pareto": pareto} | ({"importance": weights} if weights is not None else {})
    for stale in ([] if weights is not None else [ext for ext, _ in EXPORTERS.values()]):
        (target / f"importance{stale}").unlink(missing_ok=True)  # an older report's table of what is not estimated
    written = [str(p) for p in export(tables, target, formats, notes)]
    # configs.tex is the paper's table (booktabs, mean ± sd, ties marked), not the generic LaTeX dump.
    written += [str(p) for p in export({"configs": configs}, target, [f for f in formats if f != "latex"], notes)
                if p.name != PROBLEMS_FILE]
    if "latex" in formats:
        atomic_write_text(target / "configs.tex", configs_to_latex(configs, notes))
        written.append(str(target / "configs.tex"))
    from ecg_ray.results import figures, page  # matplotlib: once the tables are written (a folder that cannot be is refused first)

    pictures = figures.draw_all(trials, hist, configs, test, target, weights)
    written += [str(p) for p in pictures.values()]
    summary = {"configs": configs[with_varying_knobs(CONFIG_SUMMARY_COLUMNS + ["params", "macs_per_record", "latency_b1_ms"],
                                                     configs)],
               "pareto": pareto,
               "trials": trials[with_varying_knobs(SUMMARY_COLUMNS, trials)]}
    if weights is not None:
        summary["importance"] = weights.drop(columns="method")
    if test is not None:
        summary["test"] = test[with_varying_knobs(TEST_SUMMARY_COLUMNS, test)]
    how = page.provenance(record, splits, runs, hist, trials)
    name = record.get("config", {}).get("name") or exp.name
    atomic_write_text(target / "index.html", page.render(name, summary, pictures, how, [seeds_note(configs)], problems,
                                                         analysis_notes))
    written.append(str(target / "index.html"))
    return written


def analyse(trials: pd.DataFrame, hist: pd.DataFrame, costs: dict | None, record: dict, oof: dict | None = None):
    """(configs with their costs (and out-of-fold scores when cross-validated), the Pareto table, the
    importance table or None, a note per section): what the report adds to the ranking
    (ecg_ray.results.tradeoffs, ecg_ray.results.importance, ecg_ray.results.oof)."""
    from ecg_ray.results.importance import importance
    from ecg_ray.results.tradeoffs import costs_note, pareto_table, with_costs

    data_length = (record.get("data", {}).get("settings", {}) or {}).get("target_length") or 0
    configs = rank_configs(trials)
    if "n_folds" in configs:
        from ecg_ray.results.oof import oof_columns

        configs = oof_columns(configs, trials, oof)
    configs = with_costs(configs, hist, costs, data_length)
    keys = varying_keys(configs)
    weights, weights_note = importance(configs, keys)
    return configs, pareto_table(configs, keys), weights, {"pareto": costs_note(costs, configs), "importance": weights_note}


def _read_or_note(read, default, problems: list[str]):
    """What `read` returns, or `default` with the damage named in `problems` (the report's provenance only)."""
    try:
        return read()
    except (DamagedFile, ConfigError) as err:
        problems.append(f"{err} The report's provenance leaves it out")
        return default


def test_table(exp: ExperimentDir, problems: list[str]) -> pd.DataFrame | None:
    """The held-out test evaluation recorded in the folder (None when there is none)."""
    try:
        rows = exp.read_test_results()
    except DamagedFile as err:
        problems.append(f"{err} No test table was written. Remove the file and run "
                        "`ecg-ray tune --resume` on the folder: it evaluates the test split again")
        return None
    return pd.DataFrame(rows) if rows else None
