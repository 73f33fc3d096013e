"""The report as one self-contained HTML page: report/index.html.

    ecg-ray report ~/ecg_ray_results/quick      # rebuilds it with the tables

Tables, the figures (embedded as PNG data URIs), and how every number was made: the
experiment file, data source, fingerprint and hash, split sizes, seeds, each run's
start, end, cluster and library versions, the ecg_ray git commit, the devices the
trials ran on. No script, no stylesheet or font from the network: it opens the same
offline, in a mail attachment, or in a paper's supplementary material.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ecg_ray.schema import RANK_METRIC

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 12.5px; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
tr.best td { font-weight: 600; background: #fff7e0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.note { color: #555; } .warn { color: #a33; } dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; } dd { margin: 0; }
.scroll { overflow-x: auto; }
"""

CAPTIONS = {
    "learning_curves": "Validation macro-F1 and loss of every trial by epoch; the best trial in red, trials that ASHA "
                       "stopped early dashed and ending in ×.",
    "confusion_val": "Confusion matrix of the best config's best trial at its best validation epoch (counts and share of "
                     "each true class).",
    "confusion_test": "The model best_model.pt ships (the best config's ensemble where it has several trials, else the "
                      "checkpoint above) on the held-out test split, which no selection step saw.",
    "hyperparameters": "Best validation macro-F1 by each hyperparameter that varies: every trial (seeds and other "
                       "settings pooled), with the mean and its 95% t-interval.",
    "per_class_f1": "Per-class validation F1 at the best epoch of the top configs (mean ± sd over seeds).",
    "pareto": "Mean best validation macro-F1 of every config against its multiply-accumulates per record, parameters "
              "and inference latency at batch 1; red: the configs no other beats on both (#: config rank). Latency "
              "depends on the machine it was timed on.",
    "importance": "Each searched key's share of the variance of the configs' mean validation macro-F1 (fANOVA).",
    "compare_curves": "Validation macro-F1 by epoch of each experiment's best config, the mean over its seeds.",
    "parallel": "Every config as a line through its searched values (and its mean validation macro-F1), coloured by "
                "that mean: the best are yellow.",
}


def _cell(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else (f"{v:.3g}" if 0 < abs(v) < 1e-3 else f"{v:.4f}")
    return html.escape(str(v))


def table(df: pd.DataFrame, best_first: bool = False) -> str:
    text = {c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) or df[c].dtype == bool}
    head = "".join(f'<th class="{"text" if c in text else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = "".join(f'<td class="{"text" if c in text else ""}">{_cell(v)}</td>' for c, v in zip(df.columns, row))
        rows.append(f'<tr class="{"best" if best_first and i == 0 else ""}">{cells}</tr>')
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def figure(name: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure id="fig-{name}"><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(CAPTIONS.get(name, name))}</figcaption></figure>")


def _dl(items: dict) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(str(k))}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>"


def provenance(record: dict, splits: dict, runs: list[dict], hist: pd.DataFrame, trials: pd.DataFrame) -> str:
    """How the numbers were made, from the experiment folder's own records."""
    e = html.escape
    meta = record.get("data", {})
    sizes = {split: len(ids) for split, ids in splits.get("ids", {}).items()}
    settings = meta.get("settings", {})
    data = {
        "source": e(f"{settings.get('source', '?')}: {meta.get('source', '?')}"),
        "content fingerprint": f"<code>{e(str(meta.get('fingerprint', '?'))[:16])}</code>",
        "prepared data hash": f"<code>{e(str(record.get('data_hash', '?')))}</code> (every trial and checkpoint records it)",
        "split sizes": e(", ".join(f"{k} {v}" for k, v in sizes.items())) + (
            " (the test split is never used for training, ranking or early stopping)" if "test" in sizes else ""),
        "preparation": e(f"pad (zeros at the end) or centre-trim to {settings.get('target_length')} samples at "
                         f"{settings.get('sampling_rate')} Hz; split seed {settings.get('seed')}"),
        "records dropped as bad": e(str(len(meta.get("skipped", [])))),
    }
    if meta.get("lengths"):
        lengths = meta["lengths"]
        data["raw lengths"] = e(f"min {lengths['min']}, median {lengths['median']:g}, max {lengths['max']} samples; "
                                f"{lengths['padded']} padded, {lengths['trimmed']} trimmed")
    seeds = sorted({int(s) for s in trials["seed"]})
    devices = hist.groupby("trial_id")["device"].last().fillna("unknown").value_counts()
    nodes = {n for v in trials["node_ids"] for n in str(v).split(",") if n}
    run_rows = pd.DataFrame([{
        "started": r.get("started"), "ended": r.get("ended") or "did not end (killed?)",
        "wall time (s)": r.get("wall_s") if r.get("wall_s") is not None else float("nan"),
        "resume": bool(r.get("resume")), "trials": r.get("trials"), "cluster": r.get("cluster"),
        "nodes": r.get("nodes"), "CPUs": r.get("cpus"), "GPUs": r.get("gpus"), "host": r.get("host"),
        "ecg_ray": (r.get("versions") or {}).get("ecg_ray"), "git commit": r.get("git_commit") or "unknown",
        "python": (r.get("versions") or {}).get("python"), "torch": (r.get("versions") or {}).get("torch"),
        "ray": (r.get("versions") or {}).get("ray"), "numpy": (r.get("versions") or {}).get("numpy"),
    } for r in runs])
    how = {
        "seeds": e(", ".join(map(str, seeds))) + e(f" ({len(trials)} trials of {trials['trial_id'].nunique()} keys)"),
        "devices": e(", ".join(f"{d}: {n} trial(s)" for d, n in devices.items())) + e(f" on {len(nodes)} node(s)"),
        "trial time": e(f"{trials['wall_time_s'].sum():.1f} s summed over trials"),
        "experiment created": e(str(record.get("created", "?"))),
        "run settings": f"<code>{e(str(record.get('settings', {})))}</code>",
    }
    if record.get("config", {}).get("origin"):
        how["follow-up of"] = e(str(record["config"]["origin"]))
    parts = ["<h3>Data</h3>", _dl(data), "<h3>Trials</h3>", _dl(how), "<h3>Runs</h3>"]
    parts.append(table(run_rows) if len(run_rows) else '<p class="note">No run was recorded (an experiment made '
                                                       "before ecg_ray recorded runs).</p>")
    parts += ["<h3>Experiment file</h3>",
              f"<pre>{e(yaml.safe_dump(record.get('config', {}), sort_keys=False))}</pre>"]
    return "".join(parts)


SECTIONS = (("Configs over seeds", "configs"), ("Held-out test split", "test"), ("Cost and the Pareto front", "pareto"),
            ("What mattered: hyperparameter importance", "importance"), ("Trials", "trials"))


def render(name: str, summary: dict[str, pd.DataFrame], figures: dict[str, Path], provenance_html: str,
           notes: list[str], problems: list[str], section_notes: dict[str, str] | None = None) -> str:
    """The page: summary tables (configs, test, Pareto, importance, trials), figures, then provenance.
    `section_notes` says under a section's title what it is (or, without its table, why not)."""
    e = html.escape
    body = [f"<h1>ecg_ray report: {e(name)}</h1>",
            f'<p class="note">Ranked by best validation macro-F1 ({e(RANK_METRIC)}). Built by <code>ecg-ray report</code> '
            "from the experiment folder's own files (nothing was re-run; the same folder gives the same page, byte for "
            "byte).</p>"]
    if problems:
        body.append(f'<p class="warn">{len(problems)} problem(s) reading the folder; these tables leave out what could '
                    "not be read:</p><ul>" + "".join(f'<li class="warn">{e(p)}</li>' for p in problems) + "</ul>")
    section_notes = section_notes or {}
    for title, key in SECTIONS:
        if key == "configs" and "n_folds" in summary.get("configs", pd.DataFrame()):  # cross-validated: its rows are folds
            title = "Configs over folds and seeds"
        if key in summary or key in section_notes:
            body.append(f"<h2>{title}</h2>")
            if notes and key == "configs":
                body += [f'<p class="note">{e(n)}</p>' for n in notes]
            if key in section_notes:
                body.append(f'<p class="note">{e(section_notes[key])}</p>')
            if key in summary and len(summary[key]):
                body.append(table(summary[key], best_first=key in ("configs", "trials")))
    if figures:
        body.append("<h2>Figures</h2>")
        body += [figure(n, p) for n, p in figures.items()]
    body += ["<h2>How these numbers were made</h2>", provenance_html]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ecg_ray report: {e(name)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
