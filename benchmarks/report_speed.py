"""How long `ecg-ray report` and `ecg-ray compare` take on folders of a few hundred trials.

    python benchmarks/report_speed.py            # needs only the README's install; prints a table

Writes synthetic finished experiment folders (a random search over 13 keys, 6 epochs per trial,
costs.json for a few model shapes) into a temporary folder, then times write_report (tables,
figures, importance, Pareto, index.html) and write_comparison of two such folders, each run
twice: the first pays the one-off imports (matplotlib, sklearn, optuna), the second is what a
rebuild costs. Also checks that the page is the same bytes both times.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecg_ray.results.compare import write_comparison  # noqa: E402
from ecg_ray.results.report import write_report  # noqa: E402

KEYS = {"lr": lambda r: float(10 ** r.uniform(-4, -2.5)), "hidden_size": lambda r: int(r.choice([64, 128, 256])),
        "dropout": lambda r: float(r.uniform(0.1, 0.5)), "optimizer": lambda r: str(r.choice(["adam", "sgd"])),
        "weight_decay": lambda r: float(10 ** r.uniform(-6, -3)), "lr_schedule": lambda r: str(r.choice(["constant", "cosine"])),
        "warmup_epochs": lambda r: int(r.integers(0, 3)), "grad_clip": lambda r: float(r.choice([0.0, 1.0])),
        "label_smoothing": lambda r: float(r.choice([0.0, 0.1])), "gru_layers": lambda r: int(r.choice([1, 2])),
        "bidirectional": lambda r: bool(r.choice([False, True])), "conv_channels": lambda r: int(r.choice([8, 16])),
        "normalize": lambda r: str(r.choice(["none", "zscore"]))}
EPOCHS = 6


def fake_folder(path: Path, n_trials: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    statuses, shapes = {}, {}
    for i in range(n_trials):
        key = f"t{i:04d}"
        params = {k: draw(rng) for k, draw in KEYS.items()} | {"batch_size": 32, "epochs": EPOCHS, "seed": 42, "trial_key": key}
        folder = path / f"_trial_driver_{key}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps(params))
        top = rng.uniform(0.3, 0.7)
        lines = []
        for e in range(1, EPOCHS + 1):
            f1 = top * (1 - 0.5 ** e)
            r = {"trial_id": key, "epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "val_loss": 1 - f1, "val_acc": f1,
                 "val_macro_f1": f1, "val_challenge_f1": f1, "epoch_time_s": 30.0, "time_total_s": 30.0 * e,
                 "node_id": "n1", "data_hash": "abc", "val_confusion": np.eye(4, dtype=int).tolist(), "peak_rss_mb": 900.0}
            r |= {f"val_{m}_{c}": f1 for m in ("f1", "precision", "recall") for c in ("N", "A", "O", "noisy")}
            lines.append(json.dumps(r))
        (folder / "result.json").write_text("\n".join(lines) + "\n")
        statuses[key] = {"status": "TERMINATED", "last_epoch": EPOCHS}
        shape = {"hidden_size": params["hidden_size"], "gru_layers": params["gru_layers"],
                 "bidirectional": params["bidirectional"], "conv_channels": params["conv_channels"], "n_fft": 256,
                 "hop_length": 128, "normalize": params["normalize"], "target_length": 9000, "precision": "fp32",
                 "channels_last": False}
        shapes[json.dumps(shape, sort_keys=True)] = shape | {
            "params": 100_000 * params["hidden_size"] // 64, "macs_per_record": 10_000_000 * params["gru_layers"],
            "latency_b1_ms": 2.0, "latency_b256_ms": 500.0, "latency_device": "cpu: synthetic"}
    (path / "trial_status.json").write_text(json.dumps(statuses))
    record = {"config": {"name": path.name}, "data_hash": "abc", "data": {"settings": {"target_length": 9000}}}
    (path / "ecg_ray_experiment.json").write_text(json.dumps(record))
    (path / "data_splits.json").write_text(json.dumps({"ids": {"train": ["a", "b"], "val": ["c"]}}))
    (path / "costs.json").write_text(json.dumps({"repeats": 5, "host": "synthetic", "rows": list(shapes.values())}))
    return path


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    print("| trials | report, first (s) | report, again (s) | same page | compare of two (s) |")
    print("|---:|---:|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (50, 200, 400):
            a, b = fake_folder(Path(tmp, f"a{n}"), n, 0), fake_folder(Path(tmp, f"b{n}"), n, 1)
            first = timed(lambda: write_report(str(a)))
            page = (a / "report" / "index.html").read_bytes()
            again = timed(lambda: write_report(str(a)))
            same = (a / "report" / "index.html").read_bytes() == page
            both = timed(lambda: write_comparison([str(a), str(b)], str(Path(tmp, f"cmp{n}"))))
            print(f"| {n} | {first:.2f} | {again:.2f} | {'yes' if same else 'NO'} | {both:.2f} |", flush=True)


if __name__ == "__main__":
    main()
