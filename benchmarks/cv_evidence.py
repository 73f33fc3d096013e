"""Issue 25's evidence on a real sample: cross-validation against seeds on one split, each config's
ensemble against its single best trial, and grouped ASHA against per-trial ASHA and none.

    python benchmarks/cv_evidence.py ../shared/data/cinc2017-sample [--storage DIR]   # ~40 min on 2 CPU cores
    python benchmarks/cv_evidence.py SAMPLE --storage DIR --run none                  # the tables again, nothing run

Needs only the README's install. Steps (each an `ecg-ray` command, printed as it runs):
  1. the notebook's 16-point grid, one seed, one split, ASHA (cv_evidence/grid.yaml);
  2. its top 4 configs at 3 seeds on that split (`ecg-ray repeat --top 4 --seeds 3`);
  3. the same 4 at 1 seed on 5 stratified folds of the same train+val pool (`--folds 5`);
  4. 8 grid points at 3 seeds under grouped ASHA, per-trial ASHA and none (cv_evidence/seeds_asha.yaml).
Prints: each of the 4 configs' mean, CI width and rank under (2) and (3) with the out-of-fold
macro-F1; the test split's macro-F1 of each config's ensemble against its best trial (paired
bootstrap); the wall time and the best config of each scheduler in (4).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent / "cv_evidence"
KEYS = ["lr", "hidden_size", "dropout", "optimizer"]
SCORE = "best_val_macro_f1"


def ecg_ray(*args: str) -> None:
    print("$ ecg-ray " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "ecg_ray", *args], check=True)


def configs(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "report" / "configs.csv")


def key_of(row) -> tuple:
    return tuple(row[k] for k in KEYS)


def cv_against_seeds(grid: Path, seeds: Path, cv: Path) -> pd.DataFrame:
    one, a, b = (configs(f).set_index(KEYS) for f in (grid, seeds, cv))
    rows = []
    for key, s in a.iterrows():
        c = b.loc[key]
        rows.append({**dict(zip(KEYS, key)), "rank_1seed": int(one.loc[key, "rank"]),
                     "rank_3seeds": int(s["rank"]), "mean_3seeds": s[f"{SCORE}_mean"],
                     "ci_width_3seeds": s[f"{SCORE}_ci_high"] - s[f"{SCORE}_ci_low"],
                     "rank_5folds": int(c["rank"]), "mean_5folds": c[f"{SCORE}_mean"],
                     "ci_width_5folds": c[f"{SCORE}_ci_high"] - c[f"{SCORE}_ci_low"],
                     "oof_macro_f1": c["oof_macro_f1"], "oof_ci": f"{c['oof_macro_f1_ci_low']:.3f}-{c['oof_macro_f1_ci_high']:.3f}"})
    return pd.DataFrame(rows).sort_values("rank_5folds")


def ensembles(folder: Path, label: str) -> pd.DataFrame:
    test = pd.read_csv(folder / "report" / "test.csv")
    rows = []
    for rank, g in test.groupby("config_rank"):
        best = g[g["model"] == "best trial"].iloc[0]
        ens = g[g["model"].str.startswith("ensemble")]
        if not len(ens):
            continue
        e = ens.iloc[0]
        rows.append({"experiment": label, "config_rank": rank, **{k: best[k] for k in KEYS}, "members": e["model"],
                     "test_best_trial": best["test_macro_f1"], "test_ensemble": e["test_macro_f1"],
                     "gain": e["ensemble_gain"], "gain_ci": f"{e['ensemble_gain_ci_low']:+.3f}..{e['ensemble_gain_ci_high']:+.3f}"})
    return pd.DataFrame(rows)


def schedulers(sample: str, storage: Path, tables_only: bool = False) -> pd.DataFrame:
    raw = yaml.safe_load((HERE / "seeds_asha.yaml").read_text())
    rows = []
    for label, scheduler in (("grouped ASHA", {"group": "config"}), ("per-trial ASHA", {"group": "trial"}),
                             ("none", {"name": "none"})):
        name = f"cv_evidence_seeds_{label.split()[0].replace('-', '_')}"
        variant = raw | {"name": name, "scheduler": raw["scheduler"] | scheduler}
        if not tables_only:
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                yaml.safe_dump(variant, f)
            ecg_ray("tune", f.name, "--data", sample, "--storage", str(storage), "--overwrite", "--format", "csv")
            os.unlink(f.name)
        folder = storage / name
        run = json.loads((folder / "runs.json").read_text())[-1]
        best = configs(folder).iloc[0]
        progress = [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines() if line.strip()]
        trained = sum(1 for line in progress if "epoch" in line)  # every epoch any trial ran, as it ran
        rows.append({"scheduler": label, "wall_s": run["wall_s"], "epochs_trained": trained,
                     "trials_stopped": int(pd.read_csv(folder / "report" / "trials.csv")["early_stopped"].sum()),
                     "best_config": "/".join(str(best[k]) for k in KEYS), "best_mean": best[f"{SCORE}_mean"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", help="a CinC 2017 folder (training2017/ layout)")
    parser.add_argument("--storage", default=os.path.join(tempfile.gettempdir(), "ecg_ray_cv_evidence"))
    parser.add_argument("--run", choices=("all", "cv", "asha", "none"), default="all",
                        help="which steps to run (1-3: cv, 4: asha); the tables are printed from STORAGE either way")
    args = parser.parse_args()
    storage = Path(args.storage)
    grid = storage / "cv_evidence_grid"
    if args.run in ("all", "cv"):
        ecg_ray("tune", str(HERE / "grid.yaml"), "--data", args.sample, "--storage", str(storage), "--overwrite", "--format", "csv")
        ecg_ray("repeat", str(grid), "--top", "4", "--seeds", "3", "--overwrite", "--format", "csv")
        ecg_ray("repeat", str(grid), "--top", "4", "--seeds", "1", "--folds", "5", "--overwrite", "--format", "csv")
    seeds, cv = storage / "cv_evidence_grid_top4x3", storage / "cv_evidence_grid_top4x1_cv5"
    pd.set_option("display.width", 200)
    pd.set_option("display.float_format", "{:.4g}".format)
    print("\nThe top 4 configs of the one-seed grid: 3 seeds on one split against 1 seed on 5 folds\n")
    print(cv_against_seeds(grid, seeds, cv).to_string(index=False))
    print("\nTest split: each config's ensemble against its best trial (paired bootstrap over test records)\n")
    print(pd.concat([ensembles(seeds, "3 seeds"), ensembles(cv, "5 folds")]).to_string(index=False))
    print("\n8 grid points at 3 seeds: grouped ASHA, per-trial ASHA, no early stopping\n")
    print(schedulers(args.sample, storage, args.run not in ("all", "asha")).to_string(index=False))


if __name__ == "__main__":
    main()
