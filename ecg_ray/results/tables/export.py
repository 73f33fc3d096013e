"""Tables to files: CSV, Markdown, JSON, Parquet and LaTeX (the configs table as a paper's booktabs
table), each written atomically; numbers stay numbers until here, where only Markdown and LaTeX are
rounded for reading, and the problems found reading the folder end each text table.

    python -c "import pandas as pd; from ecg_ray.results.tables.export import to_markdown; print(to_markdown(pd.DataFrame({'a': [1.5]})))"
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ecg_ray.config import DEFAULT_EXPORT_FORMATS
from ecg_ray.errors import ConfigError
from ecg_ray.results.tables.columns import varying_keys
from ecg_ray.results.tables.ranking import config_folds, config_seeds, runs_per_config
from ecg_ray.schema import RANK_METRIC
from ecg_ray.storage import atomic_path, atomic_write_text


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
