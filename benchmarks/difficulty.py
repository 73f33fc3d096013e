"""How hard the built-in synthetic data is, against the real CinC 2017 records: one config trained on each.

    python benchmarks/difficulty.py                       # 1000 records each, 15 epochs, the notebook's best config
    python benchmarks/difficulty.py --records 8528 --epochs 20 --sets realistic   # the calibration target (CPU: ~15 min)
    python benchmarks/difficulty.py --real ../shared/data/cinc2017-sample --json difficulty.json

Trains the same trial (ecg_ray.training.loop, no Ray; default the notebook's best grid point: lr 5e-4,
H 256, dropout 0.3, Adam, seed 42) on an 80/20 stratified split of: the real records (when
--real names a challenge folder that exists), `data.difficulty: realistic` synthetic records and
`easy` synthetic records, and prints one row per data set: best val macro-F1 and its epoch,
the last epoch's, val challenge F1, and seconds per epoch. The realistic generator is
calibrated so that its row lands near the real one.

Needs only the README's install (`pip install torch==2.13.0 -e .`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from ecg_ray.config import TrialConfig, experiment_from_dict
from ecg_ray.data.prepare import prepare
from ecg_ray.training.loop import build_trial, run_epoch

DEFAULT_REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cinc2017-sample")


def measure(name: str, data_cfg: dict, trial: TrialConfig, epochs: int, device: str) -> dict:
    cfg = experiment_from_dict({"data": {"val_fraction": 0.2, **data_cfg}})
    data = prepare(cfg, use_cache=False)
    state = build_trial(trial, data.weights, device)
    curve, times = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        m = run_epoch(state, data, trial.batch_size)
        times.append(time.perf_counter() - t0)
        curve.append((m["val_macro_f1"], m["val_challenge_f1"]))
        print(f"  {name}: epoch {len(curve)}/{epochs} val_macro_f1 {m['val_macro_f1']:.4f} ({times[-1]:.1f} s)", flush=True)
    best = max(range(epochs), key=lambda e: curve[e][0])
    return {"records": sum(len(v) for v in data.y.values()), "best_val_macro_f1": round(curve[best][0], 4),
            "best_epoch": best + 1, "last_val_macro_f1": round(curve[-1][0], 4),
            "val_challenge_f1_at_best": round(curve[best][1], 4), "s_per_epoch": round(sum(times) / epochs, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1000, help="synthetic records (the real set is what the folder holds)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--real", default=DEFAULT_REAL, help="a CinC 2017 challenge folder (skipped when absent)")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--sets", nargs="+", default=["real", "realistic", "easy"], choices=["real", "realistic", "easy"],
                   help="which data sets to train on (default all three)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    trial = TrialConfig(lr=args.lr, hidden_size=args.hidden, dropout=args.dropout, epochs=args.epochs)
    sets = {"real (CinC 2017)": {"source": "cinc2017", "path": os.path.abspath(args.real)}} if os.path.isdir(args.real) else {}
    sets |= {f"{d} synthetic": {"source": "synthetic", "n_records": args.records, "difficulty": d} for d in ("realistic", "easy")}
    sets = {name: c for name, c in sets.items() if name.split()[0] in args.sets}
    device = "cuda" if args.gpu else "cpu"
    rows = []
    print(f"trial: {trial.lr=}, {trial.hidden_size=}, {trial.dropout=}, {trial.optimizer}, {args.epochs} epochs, {device}", flush=True)
    for name, data_cfg in sets.items():
        rows.append({"data": name, **measure(name, data_cfg, trial, args.epochs, device)})
        print(rows[-1], flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
