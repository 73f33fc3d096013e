"""The ranked tables as a person reads them in a terminal: the trials, then the configs over seeds,
with the config keys that vary (at most CONSOLE_KEYS; the files have every one)."""

from __future__ import annotations

import pandas as pd

from ecg_ray.results.tables.columns import CONFIG_SUMMARY_COLUMNS, SUMMARY_COLUMNS, varying_keys
from ecg_ray.results.tables.export import to_markdown
from ecg_ray.results.tables.ranking import rank_configs, runs_per_config, seeds_note
from ecg_ray.schema import CONFIG_COLUMNS


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
