"""The report: an experiment folder -> ranked tables, analyses, figures and one page, exported.

    ecg-ray report ~/ecg_ray_results/quick --format csv markdown json

Pure functions over the files Tune and ecg_ray wrote; nothing is re-run, so a finished or an
interrupted experiment reports the same way. This module puts the jobs together: the folder read
once (results.store), the tables (results.tables: history, ranking, export), the analyses
(results.analysis), the held-out test (results.inference) and the page (results.page).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ecg_ray import storage
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.results.store.folder import DamagedFile, ExperimentDir
from ecg_ray.results.store.results import Results
from ecg_ray.results.store.state import FolderState
from ecg_ray.results.tables.columns import CONFIG_SUMMARY_COLUMNS, SUMMARY_COLUMNS, TEST_SUMMARY_COLUMNS, varying_keys, with_varying_knobs
from ecg_ray.results.tables.export import DEFAULT_FORMATS, EXPORTERS, PROBLEMS_FILE, configs_to_latex, export
from ecg_ray.results.tables.history import at_grouped_stops, unreported_trials, history_of
from ecg_ray.results.tables.ranking import rank_configs, rank_trials, seeds_note
from ecg_ray.storage import atomic_write_text


def read_results(folder) -> Results:
    """What `folder` (a path, a URI, an ExperimentDir, or the FolderState a command holds) left, read
    once and ranked. Raises ConfigError when no epoch of any trial has finished."""
    state = FolderState.load(folder)
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
    exp = FolderState.load(exp_dir)
    if not exp.found:
        raise ConfigError(f"Experiment folder {exp_dir} does not exist. Pass the folder `ecg-ray tune` printed.")
    folders = exp.trials(problems)
    hist = history_of(folders, problems)
    statuses, scheduler = {}, None
    try:
        statuses = exp.read_statuses()
    except DamagedFile as err:
        problems.append(f"{err} Trial statuses are unknown: trials that ran every epoch count as finished")
    unreported_trials(exp, folders, hist, statuses, problems)
    hist = at_grouped_stops(exp, hist, statuses)
    if hist.empty and not exp.exists():  # no record either: another kind of folder
        from ecg_ray.results.store.folder import not_an_experiment

        raise ConfigError(f"{exp.path} is not an experiment folder: {not_an_experiment(exp.path)}.")
    if hist.empty:
        raise ConfigError(f"{exp_dir} holds no finished epoch of any trial yet (no */result.json with metrics)."
                          + (f" Problems: {'; '.join(problems)}" if problems else ""))
    try:
        scheduler = exp.scheduler_name()
    except DamagedFile as err:
        problems.append(f"{err} The scheduler is unknown, so no early stop is attributed to ASHA")
    return rank_trials(hist, statuses, scheduler), hist


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

    `source`: the Results a run already holds (ecg_ray.results.store.results), or a folder (a local
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
    from ecg_ray.results.analysis.importance import MIN_CONFIGS

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
    from ecg_ray.results.page import figures, webpage  # matplotlib: once the tables are written (a folder that cannot be is refused first)

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
    how = webpage.provenance(record, splits, runs, hist, trials)
    name = record.get("config", {}).get("name") or exp.name
    atomic_write_text(target / "index.html", webpage.render(name, summary, pictures, how, [seeds_note(configs)], problems,
                                                         analysis_notes))
    written.append(str(target / "index.html"))
    return written


def analyse(trials: pd.DataFrame, hist: pd.DataFrame, costs: dict | None, record: dict, oof: dict | None = None):
    """(configs with their costs (and out-of-fold scores when cross-validated), the Pareto table, the
    importance table or None, a note per section): what the report adds to the ranking
    (ecg_ray.results.analysis.tradeoffs, ecg_ray.results.analysis.importance, ecg_ray.results.analysis.oof)."""
    from ecg_ray.results.analysis.importance import importance
    from ecg_ray.results.analysis.tradeoffs import costs_note, pareto_table, with_costs

    data_length = (record.get("data", {}).get("settings", {}) or {}).get("target_length") or 0
    configs = rank_configs(trials)
    if "n_folds" in configs:
        from ecg_ray.results.analysis.oof import oof_columns

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
