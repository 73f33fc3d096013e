"""Experiments side by side: is search B really better than search A?

    ecg-ray compare ~/ecg_ray_results/grid ~/ecg_ray_results/extended --out comparison/

Reads two or more experiment folders (nothing is re-run) and writes to --out: `best.*` (each
experiment's top configs with mean, 95% CI and cost), `pairs.*` (every pair of experiments:
their best configs' difference, and where the pair is comparable, paired tests), and
`index.html` (those tables and the best configs' learning curves overlaid, one self-contained
page, the same bytes for the same folders).

Two experiments are *paired* when their prepared data hash and their split (the record ids of
every split) are the same: then each seed trains on the same records in both, so the best
configs' best val macro-F1 are paired by seed (a two-sided paired t-test over the seeds both
ran), and where both evaluated a test split of the same records, a paired bootstrap over those
records (seeded) gives a 95% CI of the difference in test macro-F1 between their best trials.
Otherwise the page says why not (which of data or split differs) and shows them unpaired.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ecg_ray.errors import ConfigError
from ecg_ray.results.store.folder import DamagedFile, ExperimentDir
from ecg_ray.results.analysis.stats import paired_bootstrap, paired_p_value
from ecg_ray.results.tables.columns import varying_keys
from ecg_ray.schema import RANK_METRIC
from ecg_ray import storage
from ecg_ray.storage import atomic_write_text

TOP = 3
SCORE = f"best_{RANK_METRIC}"
FORMATS = ("csv", "markdown", "latex")


@dataclass
class Side:
    """One experiment as the comparison reads it."""

    label: str
    path: str
    trials: pd.DataFrame
    hist: pd.DataFrame
    configs: pd.DataFrame  # ranked, with costs
    data_hash: str | None
    split_hash: str | None
    folds: object = None
    predictions: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def best(self) -> pd.Series:
        return self.configs.iloc[0]

    def seed_scores(self) -> dict[tuple, float]:
        """(seed, fold) -> best val macro-F1 of the best config's trials (fold None: the single split)."""
        from ecg_ray.results.tables.ranking import replicate

        ids = str(self.best["trial_ids"]).split(",")
        rows = self.trials[self.trials["trial_id"].isin(ids)]
        return {replicate(r): float(r[SCORE]) for _, r in rows.iterrows()}

    def best_test_trial(self) -> str | None:
        """The best config's trial (best seed first) whose test predictions were saved."""
        from ecg_ray.results.inference.predict import members_of

        if not self.predictions:
            return None
        for trial_id in members_of(self.trials, self.best)["trial_id"]:
            if trial_id in self.predictions.get("pred", {}):
                return trial_id
        return None


def read_side(exp_dir: str, label: str, problems: list[str]) -> Side:
    from ecg_ray.results.report import analyse, build_report

    from ecg_ray.results.store.state import FolderState

    exp = FolderState.load(ExperimentDir.parse(exp_dir))  # one read of the folder (one download of a bucket's)
    own: list[str] = []

    def read(fn, default):
        try:
            return fn() or default
        except (DamagedFile, ConfigError) as err:
            own.append(f"{err} The comparison leaves it out")
            return default

    trials, hist = build_report(exp, own)
    record, splits = read(exp.read_record, {}), read(exp.read_splits, {})
    costs, predictions = read(exp.read_costs, None), read(exp.read_test_predictions, None)
    oof = read(exp.read_oof, None)
    configs = analyse(trials, hist, costs, record, oof)[0]
    ids = (splits or {}).get("ids")
    split_hash = hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:16] if ids else None
    folds = ((record.get("config") or {}).get("data") or {}).get("folds")
    problems += [f"{label}: {p}" for p in own]
    return Side(label, exp.path, trials, hist, configs, record.get("data_hash"), split_hash, folds, predictions, own)


def pairing(a: Side, b: Side) -> tuple[bool, str]:
    """(paired, why): the same data and split, or what differs."""
    if not a.data_hash or not b.data_hash:
        return False, "a data hash is not recorded, so the data cannot be shown to be the same: unpaired"
    if a.data_hash != b.data_hash:
        return False, f"different data (hash {a.data_hash} vs {b.data_hash}): shown side by side, unpaired, no test"
    if not a.split_hash or a.split_hash != b.split_hash:
        return False, "the same data but a different split (data_splits.json differs): unpaired, no test"
    if a.folds != b.folds:
        return False, f"the same data but different folds ({a.folds} vs {b.folds}): unpaired, no test"
    return True, "the same data and split: paired by seed" + (" and fold" if a.folds else "")


def _labels(dirs: list[str]) -> list[str]:
    names = [Path(str(d).rstrip("/")).name or str(d) for d in dirs]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def best_table(sides: list[Side], top: int = TOP) -> pd.DataFrame:
    """Each experiment's top configs: its varying keys (the union over experiments), mean, CI, cost."""
    from ecg_ray.results.analysis.tradeoffs import CONFIG_COST_COLUMNS

    keys = [k for side in sides for k in varying_keys(side.configs)]
    keys = list(dict.fromkeys(keys)) or ["lr"]
    rows = []
    for side in sides:
        for _, row in side.configs.head(top).iterrows():
            out = {"experiment": side.label, "rank": int(row["rank"])}
            out |= {k: row[k] if k in row else math.nan for k in keys}
            out |= {"n_seeds": int(row["n_seeds"]), "n_folds": int(row.get("n_folds", 0) or 0), f"{SCORE}_mean": row[f"{SCORE}_mean"], f"{SCORE}_sd": row[f"{SCORE}_sd"],
                    f"{SCORE}_ci_low": row[f"{SCORE}_ci_low"], f"{SCORE}_ci_high": row[f"{SCORE}_ci_high"],
                    "val_challenge_f1_mean": row["val_challenge_f1_mean"], "tied_with_best": row["tied_with_best"]}
            out |= {c: row.get(c) for c in CONFIG_COST_COLUMNS}
            rows.append(out)
    return pd.DataFrame(rows)


def _aligned(a: Side, b: Side):
    """(y, a's predictions, b's) on the test records both evaluated, by record id; None without any."""
    ta, tb = a.best_test_trial(), b.best_test_trial()
    if ta is None or tb is None:
        return None
    pa, pb = a.predictions, b.predictions
    where_b = {rid: i for i, rid in enumerate(pb["ids"])}
    shared = [(i, where_b[rid]) for i, rid in enumerate(pa["ids"]) if rid in where_b]
    if not shared or any(pa["y"][i] != pb["y"][j] for i, j in shared):
        return None
    return ([pa["y"][i] for i, _ in shared], [pa["pred"][ta][i] for i, _ in shared], [pb["pred"][tb][j] for _, j in shared])


def pairs_table(sides: list[Side]) -> pd.DataFrame:
    rows = []
    for i, a in enumerate(sides):
        for b in sides[i + 1:]:
            paired, why = pairing(a, b)
            sa, sb = a.seed_scores(), b.seed_scores()
            row = {"a": a.label, "b": b.label, "paired": paired, "pairing": why,
                   "mean_a": float(a.best[f"{SCORE}_mean"]), "mean_b": float(b.best[f"{SCORE}_mean"])}
            row["diff"] = row["mean_a"] - row["mean_b"]
            shared = sorted(set(sa) & set(sb)) if paired else []
            row |= {"shared_seeds": ",".join(dict.fromkeys(str(seed) for seed, _ in shared)),
                    "shared_pairs": len(shared),
                    "p_paired_by_seed": paired_p_value([sa[s] for s in shared], [sb[s] for s in shared]) if paired else math.nan}
            test = _aligned(a, b) if paired else None
            row |= paired_bootstrap(*test) if test else {"test_diff": math.nan, "test_diff_ci_low": math.nan,
                                                         "test_diff_ci_high": math.nan, "n_test_records": 0}
            rows.append(row)
    return pd.DataFrame(rows)


def _best_curve(side: Side) -> pd.DataFrame:
    """Epoch -> mean val macro-F1 over the best config's trials."""
    ids = str(side.best["trial_ids"]).split(",")
    g = side.hist[side.hist["trial_id"].isin(ids)]
    return g.groupby("epoch", sort=True)[RANK_METRIC].mean().reset_index()


def curves_figure(sides: list[Side], dest: Path) -> Path:
    from matplotlib.figure import Figure

    from ecg_ray.results.page.figures import _save

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for i, side in enumerate(sides):
        curve = _best_curve(side)
        ax.plot(curve["epoch"], curve[RANK_METRIC], "o-", color=f"C{i}", lw=2,
                label=f"{side.label}: best config (mean over {int(side.best.get('n_trials', side.best['n_seeds']))} trial(s))")
    ax.set(xlabel="epoch", ylabel="val macro-F1", title="Learning curves of each experiment's best config")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, dest)


def render(sides: list[Side], best: pd.DataFrame, pairs: pd.DataFrame, figure_path: Path, problems: list[str]) -> str:
    from html import escape as e

    from ecg_ray.results.page import webpage as page

    title = "ecg_ray compare: " + " vs ".join(s.label for s in sides)
    overview = pd.DataFrame([{"experiment": s.label, "folder": s.path, "data hash": s.data_hash or "?",
                              "split hash": s.split_hash or "?", "folds": s.folds or "", "trials": len(s.trials),
                              "configs": len(s.configs), "best mean": float(s.best[f"{SCORE}_mean"])} for s in sides])
    body = [f"<h1>{e(title)}</h1>",
            '<p class="note">Built by <code>ecg-ray compare</code> from the experiment folders\' own files (nothing was '
            "re-run; the same folders give the same page, byte for byte). Ranked within each experiment by mean best "
            "validation macro-F1 over seeds.</p>"]
    if problems:
        body.append(f'<p class="warn">{len(problems)} problem(s) reading the folders:</p><ul>'
                    + "".join(f'<li class="warn">{e(p)}</li>' for p in problems) + "</ul>")
    body += ["<h2>Experiments</h2>", page.table(overview)]
    body.append("<h2>Pairs</h2>")
    for _, row in pairs.iterrows():
        cls = "note" if row["paired"] else "warn"
        body.append(f'<p class="{cls}">{e(row["a"])} vs {e(row["b"])}: {e(row["pairing"])}.</p>')
    body += [page.table(pairs), "<h2>Best configs of each experiment</h2>", page.table(best),
             "<h2>Learning curves</h2>"]
    body.append(page.figure("compare_curves", figure_path))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{page.STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def write_comparison(dirs: list[str], out_dir: str, formats=FORMATS, allow_partial: bool = False,
                     top: int = TOP) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """(best table, pairs table, files written, problems) of `dirs` side by side, into `out_dir`.

    A damaged folder raises PartialReport before anything is written, unless `allow_partial`.
    """
    from ecg_ray.results.report import PartialReport

    if len(dirs) < 2:
        raise ConfigError(f"ecg-ray compare needs two or more experiment folders; got {len(dirs)}.")
    if not isinstance(top, int) or top < 1:
        raise ConfigError(f"--top must be a whole number of at least 1. Got {top!r} instead.")
    resolved = [storage.canonical(d) for d in dirs]
    if len(set(resolved)) < len(resolved):
        raise ConfigError("ecg-ray compare got the same experiment folder twice; pass each folder once.")
    problems: list[str] = []
    sides = [read_side(d, label, problems) for d, label in zip(dirs, _labels(dirs))]
    if problems and not allow_partial:
        raise PartialReport(", ".join(dirs), problems)
    best, pairs = best_table(sides, top), pairs_table(sides)
    written = storage.write_folder(str(out_dir), lambda target: _write(sides, best, pairs, target, formats, problems))
    return best, pairs, written, problems


def _write(sides: list[Side], best: pd.DataFrame, pairs: pd.DataFrame, target: Path, formats, problems: list[str]) -> list[str]:
    from ecg_ray.results.tables.export import export

    written = [str(p) for p in export({"best": best, "pairs": pairs}, target, formats, problems)]
    curves = curves_figure(sides, target / "learning_curves.png")
    written.append(str(curves))
    atomic_write_text(target / "index.html", render(sides, best, pairs, curves, problems))
    written.append(str(target / "index.html"))
    return written

