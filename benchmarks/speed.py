"""Where a tuning run's time goes: the notebook's loop, ecg_ray's loop, and a grid through `ecg-ray tune`.

    python benchmarks/speed.py --quick                      # CPU, minutes: 800 synthetic records, 2 trials x 4 epochs
    python benchmarks/speed.py --grid seed --epochs 20 --gpu --asha   # a GPU node: the notebook's 16-point grid
    python benchmarks/speed.py --quick --json speed.json    # the table as JSON too

One run, one machine, the same synthetic records for every part:

  (a) the notebook's loop: a DataFrame of raw records, a Dataset that pads/trims each
      sample when it is drawn, a DataLoader (batch 32, shuffled): seconds per epoch;
  (b) ecg_ray's trial loop (ecg_ray.training.loop, no Ray): seconds per epoch; and with each of the
      options that change the numbers (`precision: bf16`, `channels_last: true`, `compile: true`)
      its speed-up over (b); the loops of (a) and (b) take turns, one epoch each, and each one's
      first epoch (warm-up, compilation) is not counted, so a machine whose speed drifts during
      the run weighs on each alike (the median epoch of each is reported);
  (c) the grid through `ecg-ray tune` end to end (a subprocess, a new local Ray): wall
      time, the sum of epoch times, concurrent slots, the Train worker processes that ran the
      trials (fewer than the trials where a worker is kept for the next trial: --no-reuse), overhead = 1 - (sum of epoch times /
      slots) / wall, the machine's busy CPU seconds during the command (all processes: on a
      quiet machine, the work the run did, which drifts less than wall time) and those outside
      epochs, per-trial start-up (Tune driver start to the first batch) and
      tear-down (last report to the trial's end), checkpoint seconds per epoch, peak
      memory per worker;
  (c') the same grid on Ray's public API (resources.fast_path: false; ecg_ray.tuning.fast_path),
      where (c) took the fast path: the same columns, its wall time against (c)'s, and whether
      its metrics equal (c)'s bit for bit (--no-public skips it);
  (d) the yardstick: plain Ray Tune (Tune's actor reuse on, as ecg_ray's) running the same loop (a function trainable calling
      ecg_ray.training.loop's build_trial / run_epoch, one CPU or GPU share per trial, no Ray
      Train): wall time, the sum of its epoch times and its overhead (the same formula, (c)'s
      slots), busy CPU seconds, and whether its metrics equal (c)'s bit for bit;
  (e) with --asha: the grid again under ASHA: wall-clock saving against (c) and whether
      the best trial is the same.

Needs only the README's install (`pip install torch==2.13.0 -e .`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {
    "quick": {"lr": [0.001, 0.0005], "hidden_size": 128, "dropout": 0.2, "optimizer": "adam"},
    "seed": {"lr": [0.001, 0.0005], "hidden_size": [128, 256], "dropout": [0.2, 0.3], "optimizer": ["adam", "sgd"]},
}


def experiment(name: str, args, storage: Path, scheduler: str, fast_path="auto") -> Path:
    raw = {
        "name": name, "seed": 42, "storage_path": str(storage),
        "data": {"source": "synthetic", "n_records": args.records, "cache_dir": str(storage / "cache")},
        "search": {**GRIDS[args.grid], "batch_size": 32, "epochs": args.epochs},
        "scheduler": {"name": scheduler},
        "resources": {"use_gpu": bool(args.gpu), **({"gpus_per_worker": args.gpus_per_worker} if args.gpu else {}),
                      "trials_ahead": args.trials_ahead, "reuse_workers": not args.no_reuse, "fast_path": fast_path},
    }
    path = storage / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --- (a) and (b): one trial's epochs, no Ray ---------------------------------------------------


def notebook_loop(data, hidden: int, device: str) -> Callable[[], None]:
    """The notebook's loop, one epoch per call: pad/trim per sample inside a Dataset over a
    DataFrame of raw signals."""
    import numpy as np
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, Dataset

    from ecg_ray.training.model import NotebookECGModel
    from ecg_ray.data.synthetic import generate

    raw = generate(len(data.ids["train"]) + len(data.ids["val"]), seed=42)
    df = pd.DataFrame({"signal": raw.signals, "label": raw.labels})
    train_df, val_df = df.iloc[: len(data.ids["train"])], df.iloc[len(data.ids["train"]):]

    class Signals(Dataset):
        def __init__(self, frame, length=9000):
            self.frame, self.length = frame.reset_index(drop=True), length

        def __len__(self):
            return len(self.frame)

        def __getitem__(self, i):
            s = np.asarray(self.frame.loc[i, "signal"], dtype=np.float32)
            if len(s) < self.length:
                s = np.pad(s, (0, self.length - len(s)))
            else:
                start = (len(s) - self.length) // 2
                s = s[start : start + self.length]
            return torch.from_numpy(s), int(self.frame.loc[i, "label"])

    torch.manual_seed(42)
    model = NotebookECGModel(hidden_size=hidden, dropout_rate=0.2).to(device)  # the notebook's conv blocks, as written
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss(weight=torch.tensor(data.weights, device=device))
    train = DataLoader(Signals(train_df), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(42))
    val = DataLoader(Signals(val_df), batch_size=32)

    def epoch() -> None:
        model.train()
        running = 0.0
        for xb, yb in train:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            running += loss.item() * len(yb)
        model.eval()
        with torch.no_grad():
            preds = [model(xb.to(device)).argmax(1).cpu() for xb, _ in val]
        torch.cat(preds)

    return epoch


def ecg_ray_loop(data, hidden: int, device: str, **options) -> Callable[[], None]:
    """ecg_ray's trial loop (ecg_ray.training.loop), one epoch per call; `options`: TrialConfig keys."""
    from ecg_ray.config import TrialConfig
    from ecg_ray.training.loop import build_trial, run_epoch

    state = build_trial(TrialConfig(lr=1e-3, hidden_size=hidden, dropout=0.2, **options), data.weights, device)
    return lambda: run_epoch(state, data, 32)


def interleaved(loops: dict[str, Callable[[], None]], epochs: int) -> dict[str, float]:
    """Median seconds per epoch of each loop, the loops taking turns one epoch at a time (so a
    machine that speeds up or slows down during the run, as shared ones do by 10-30%, weighs on
    each loop alike); each loop's first epoch (warm-up, compilation) is not counted."""
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(epochs):
        for name, epoch in loops.items():
            start = time.perf_counter()
            epoch()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:]) for name, t in times.items()}


# --- (c) and (e): a grid through `ecg-ray tune` ------------------------------------------------


def overhead(epoch_time_sum_s: float, slots: int, wall_s: float) -> float:
    """The share of wall time not spent in epochs: 1 - (sum of epoch times / slots) / wall."""
    return 1 - (epoch_time_sum_s / slots) / wall_s


def busy_cpu_s() -> float:
    """Seconds the machine's CPUs have been busy (every process, all cores) since it booted."""
    try:
        import psutil
    except ImportError:  # the README's install has it as Ray's own copy, on the path once Ray is imported
        import ray  # noqa: F401
        import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def tune_grid(exp_file: Path, storage: Path, name: str, num_cpus: int | None, log: Path) -> dict:
    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.results.report import build_report
    from ecg_ray.schema import STARTUP_PARTS

    cmd = [sys.executable, "-m", "ecg_ray.commands.main", "tune", str(exp_file), "--overwrite", "--format", "json"]
    cmd += ["--num-cpus", str(num_cpus)] if num_cpus else []
    start, cpu = time.monotonic(), busy_cpu_s()
    with open(log, "w") as sink:  # the command's own progress lines, readable while it runs
        out = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
                             env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    wall, cpu = time.monotonic() - start, busy_cpu_s() - cpu
    if out.returncode != 0:
        raise SystemExit(f"`ecg-ray tune` failed ({out.returncode}); the end of {log}:\n{log.read_text()[-3000:]}")
    exp = ExperimentDir(str(storage / name))
    trials, hist = build_report(exp)
    (run,) = exp.read_runs()
    statuses = exp.read_statuses()
    progress = exp.read_progress()
    last_report = {}
    for line in progress:
        last_report[line["trial_id"]] = max(last_report.get(line["trial_id"], 0.0), line["time"])
    teardown = [statuses[k]["ended"] - t for k, t in last_report.items() if statuses.get(k, {}).get("ended")]
    slots = run.get("concurrent_trials") or len(trials)
    epoch_sum = float(hist["epoch_time_s"].sum())
    return {
        "wall_s": wall, "tune_wall_s": run["wall_s"], "trials": len(trials), "epochs_run": len(hist),
        "epoch_time_sum_s": epoch_sum, "slots": slots, "cpu_s": cpu, "cpu_s_outside_epochs": cpu - epoch_sum,
        "overhead": overhead(epoch_sum, slots, wall), "overhead_in_tune": overhead(epoch_sum, slots, run["wall_s"]),
        "startup_s_mean": _mean(hist["startup_s"]), "startup_s_max": _max(hist["startup_s"]),
        "startup_parts_s_mean": {k: _mean(hist[k]) for k in STARTUP_PARTS},
        "slot_wait_s_mean": _mean(hist["startup_wait_s"]), "trials_ahead": run.get("trials_ahead", 0),
        "worker_processes": len({line["worker_pid"] for line in progress}),
        "teardown_s_mean": statistics.fmean(teardown) if teardown else float("nan"),
        "checkpoint_s_per_epoch": _mean(hist["checkpoint_s"]),
        "peak_rss_mb_per_worker": _max(hist["peak_rss_mb"]), "peak_gpu_mb_per_worker": _max(hist["peak_gpu_mb"]),
        "gpu_share": exp.read_record()["settings"]["resources_per_worker"].get("GPU", 0.0),
        "fast_path": exp.read_record()["settings"]["fast_path"],
        "best_trial": str(trials.iloc[0]["trial_id"]), "best_val_macro_f1": float(trials.iloc[0]["best_val_macro_f1"]),
        "metrics": {f"{r.trial_id}/{int(r.epoch)}": r.val_macro_f1 for r in hist.itertuples()},
        "losses": {f"{r.trial_id}/{int(r.epoch)}": r.train_loss for r in hist.itertuples()},
    }


def _mean(col) -> float:
    col = col.dropna()
    return float(col.mean()) if len(col) else float("nan")


def _max(col) -> float:
    col = col.dropna()
    return float(col.max()) if len(col) else float("nan")


# --- (d): plain Ray Tune, the yardstick ---------------------------------------------------------


def plain_tune(exp_file: Path, out_json: Path, num_cpus: int | None, gpu_share: float) -> None:
    """Run in its own process (`--plain-tune`): Ray Tune with a function trainable, no Ray Train."""
    import ray
    from ray import tune

    from ecg_ray.config import load_experiment
    from ecg_ray.data.prepare import prepare

    start = time.monotonic()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cfg = load_experiment(exp_file)
    data = prepare(cfg)
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR")
    ref = ray.put(data)

    def trainable(config):
        import torch

        from ecg_ray.config import TrialConfig
        from ecg_ray.training.loop import build_trial, run_epoch

        torch.set_num_threads(1)
        prepared = ray.get(ref)
        device = "cuda" if gpu_share else "cpu"
        trial = TrialConfig.from_dict(config["trial"])
        state = build_trial(trial, prepared.weights, device)
        for _ in range(trial.epochs):
            start = time.perf_counter()
            metrics = run_epoch(state, prepared, trial.batch_size)
            tune.report(metrics | {"epoch_time_s": time.perf_counter() - start})

    grid = cfg.grid()
    resources = {"CPU": 1, **({"GPU": gpu_share} if gpu_share else {})}  # the share (c) ran at
    fit_start = time.monotonic()
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"trial": tune.grid_search([dataclasses.asdict(t) for t in grid])},
        tune_config=tune.TuneConfig(reuse_actors=True),  # as ecg_ray's Tuner: one actor runs trial after trial
        run_config=tune.RunConfig(storage_path=str(out_json.parent / "plain_tune"), verbose=0),
    )
    results = tuner.fit()
    fit_s = time.monotonic() - fit_start
    metrics, epoch_sum = {}, 0.0
    for r in results:
        key = [k for k, t in cfg.trials().items() if dataclasses.asdict(t) == r.config["trial"]][0]
        for row in r.metrics_dataframe.itertuples():
            metrics[f"{key}/{int(row.epoch)}"] = row.val_macro_f1
            epoch_sum += row.epoch_time_s
    ray.shutdown()
    out_json.write_text(json.dumps({"wall_s": time.monotonic() - start, "fit_s": fit_s, "metrics": metrics,
                                    "epoch_time_sum_s": epoch_sum}))


# --- the table --------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU size: 800 records, the 2-point quick grid, 4 epochs")
    p.add_argument("--grid", choices=sorted(GRIDS), default=None, help="quick (2 points) or seed (the notebook's 16)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--records", type=int, default=None)
    p.add_argument("--loop-epochs", type=int, default=3,
                   help="epochs of each loop in (a) and (b), taking turns; each loop's first is not counted")
    p.add_argument("--gpu", action="store_true", help="run everything on the GPU")
    p.add_argument("--gpus-per-worker", default="auto", help="with --gpu: resources.gpus_per_worker (default auto)")
    p.add_argument("--trials-ahead", default="auto", help="resources.trials_ahead for (c) and (e) (default auto; 0: off)")
    p.add_argument("--no-reuse", action="store_true",
                   help="resources.reuse_workers: false for (c) and (e): a new Train worker process per trial")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--asha", action="store_true", help="also run the grid under ASHA and compare")
    p.add_argument("--no-plain-tune", action="store_true", help="skip the plain Ray Tune yardstick")
    p.add_argument("--no-public", action="store_true", help="skip (c'), the grid on Ray's public API")
    p.add_argument("--no-compile", action="store_true", help="skip timing `compile: true` (its compilation takes ~30 s)")
    p.add_argument("--no-loops", action="store_true", help="skip (a) and (b): time only the grid (a short GPU lease)")
    p.add_argument("--json", type=Path, help="also write the results here (after each part), and the tuning runs' logs beside it")
    p.add_argument("--plain-tune", nargs=2, metavar=("EXPERIMENT", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--gpu-share", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plain_tune:
        plain_tune(Path(args.plain_tune[0]), Path(args.plain_tune[1]), args.num_cpus, args.gpu_share)
        return
    args.grid = args.grid or ("quick" if args.quick or not args.gpu else "seed")
    args.epochs = args.epochs or (4 if args.quick else 20)
    args.records = args.records or (800 if args.quick else 8528)
    if args.trials_ahead != "auto":
        args.trials_ahead = int(args.trials_ahead)
    if args.gpus_per_worker != "auto":
        args.gpus_per_worker = float(args.gpus_per_worker)

    import torch

    from ecg_ray.config import load_experiment
    from ecg_ray.data.prepare import prepare

    device = "cuda" if args.gpu else "cpu"
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: torch sees no CUDA device")
    def done(part: str) -> None:
        """Print the part that just finished and keep what is measured so far (a crash or a
        timeout later in the run leaves the parts before it in --json)."""
        print(f"[speed] {part} done, {time.monotonic() - t0:.0f} s since the start", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    t0 = time.monotonic()
    results: dict = {"device": torch.cuda.get_device_name(0) if args.gpu else f"cpu ({os.cpu_count()} cores)",
                     "grid": args.grid, "epochs": args.epochs, "records": args.records}
    with tempfile.TemporaryDirectory(prefix="ecg_ray_speed_") as tmp:
        storage = Path(tmp)
        logs = args.json.parent if args.json else storage  # the runs' logs go beside --json
        exp_file = experiment("speed", args, storage, "none")
        cfg = load_experiment(exp_file)
        data = prepare(cfg)
        if not args.no_loops:
            results["loops"] = time_loops(data, max(cfg.grid(), key=lambda t: t.hidden_size).hidden_size, device, args)
            done("(a), (b): the loops")
        grid = tune_grid(exp_file, storage, "speed", args.num_cpus, logs / "speed_tune.log")
        results["tune"] = {k: v for k, v in grid.items() if k not in ("metrics", "losses")}
        done("(c): ecg-ray tune")
        if not args.no_public and grid["fast_path"]:
            public = tune_grid(experiment("speed_public", args, storage, "none", fast_path=False), storage, "speed_public",
                               args.num_cpus, logs / "speed_public.log")
            results["public"] = {k: v for k, v in public.items() if k not in ("metrics", "losses")} | {
                "same_metrics": public["metrics"] == grid["metrics"] and public["losses"] == grid["losses"],
                "public_vs_fast": public["wall_s"] / grid["wall_s"], "public_vs_fast_cpu": public["cpu_s"] / grid["cpu_s"]}
            done("(c'): ecg-ray tune on Ray's public API")
        if not args.no_plain_tune:
            out = storage / "plain.json"
            cmd = [sys.executable, __file__, "--plain-tune", str(exp_file), str(out), "--gpu-share", str(grid["gpu_share"])]
            cmd += ["--num-cpus", str(args.num_cpus)] if args.num_cpus else []
            start, cpu = time.monotonic(), busy_cpu_s()
            run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            wall, cpu = time.monotonic() - start, busy_cpu_s() - cpu
            if run.returncode != 0:
                raise SystemExit(f"plain Ray Tune failed:\n{run.stderr[-3000:]}")
            plain = json.loads(out.read_text())
            results["plain_tune"] = {"wall_s": wall, "fit_s": plain["fit_s"], "cpu_s": cpu,
                                     "epoch_time_sum_s": plain["epoch_time_sum_s"],
                                     "overhead": overhead(plain["epoch_time_sum_s"], grid["slots"], wall),
                                     "same_metrics": plain["metrics"] == grid["metrics"],
                                     "ecg_ray_vs_plain": grid["wall_s"] / wall, "ecg_ray_vs_plain_cpu": grid["cpu_s"] / cpu}
            done("(d): plain Ray Tune")
        if args.asha:
            asha = tune_grid(experiment("speed_asha", args, storage, "asha"), storage, "speed_asha", args.num_cpus,
                             logs / "speed_asha.log")
            results["asha"] = {"wall_s": asha["wall_s"], "saving": 1 - asha["wall_s"] / grid["wall_s"],
                               "epochs_run": asha["epochs_run"], "best_trial": asha["best_trial"],
                               "same_best_trial": asha["best_trial"] == grid["best_trial"],
                               "best_val_macro_f1": asha["best_val_macro_f1"]}
            done("(e): ASHA")
    print(table(results))
    done("all")


def time_loops(data, hidden: int, device: str, args) -> dict:
    """(a) the notebook's loop and (b) ecg_ray's, then each option that changes the numbers, taking
    turns one epoch at a time: median seconds per epoch and the speed-ups."""
    import torch

    torch.set_num_threads(1)
    options = {"bf16": {"precision": "bf16"}, "channels_last": {"channels_last": True},
               **({"compile": {"compile": True}} if not args.no_compile else {})}
    loops = {"notebook": notebook_loop(data, hidden, device), "ecg_ray": ecg_ray_loop(data, hidden, device),
             **{name: ecg_ray_loop(data, hidden, device, **option) for name, option in options.items()}}
    median = interleaved(loops, args.loop_epochs)
    out = {"hidden_size": hidden, "notebook_epoch_s": median["notebook"], "ecg_ray_epoch_s": median["ecg_ray"],
           "speedup": median["notebook"] / median["ecg_ray"]}
    for name in options:
        out |= {f"{name}_epoch_s": median[name], f"{name}_speedup": median["ecg_ray"] / median[name]}
    return out


def table(r: dict) -> str:
    rows = [("device", r["device"]), ("grid", f"{r['grid']} x {r['epochs']} epochs, {r['records']} records")]
    loops = r.get("loops")
    rows += [] if loops is None else [(f"(a) notebook loop, s/epoch (H={loops['hidden_size']})", loops["notebook_epoch_s"]),
             ("(b) ecg_ray loop, s/epoch", loops["ecg_ray_epoch_s"]), ("    speed-up (a)/(b)", loops["speedup"]),
             ("    precision: bf16, s/epoch (speed-up over (b))", f"{loops['bf16_epoch_s']:.3f} ({loops['bf16_speedup']:.2f}x)"),
             ("    channels_last: true, s/epoch (speed-up over (b))",
              f"{loops['channels_last_epoch_s']:.3f} ({loops['channels_last_speedup']:.2f}x)"),
             *([("    compile: true, s/epoch (speed-up over (b))", f"{loops['compile_epoch_s']:.3f} ({loops['compile_speedup']:.2f}x)")]
               if "compile_epoch_s" in loops else [])]
    t = r["tune"]
    rows += [(f"(c) ecg-ray tune ({'fast path' if t['fast_path'] else 'public API'}): wall s (whole command)", t["wall_s"]),
             ("    wall s inside Tune", t["tune_wall_s"]),
             ("    trials / epochs run / Train worker processes", f"{t['trials']} / {t['epochs_run']} / {t['worker_processes']}"), ("    sum of epoch times, s", t["epoch_time_sum_s"]),
             ("    concurrent slots (GPU share per trial; trials started ahead)", f"{t['slots']} ({t['gpu_share']}; {t['trials_ahead']})"), ("    overhead (whole command)", t["overhead"]),
             ("    overhead (inside Tune)", t["overhead_in_tune"]),
             ("    busy CPU s, all processes (outside epochs)", f"{t['cpu_s']:.1f} ({t['cpu_s_outside_epochs']:.1f})"), ("    start-up per trial, s (mean / max)", f"{t['startup_s_mean']:.2f} / {t['startup_s_max']:.2f}"),
             ("      Train run to the worker's loop / imports / data / build, s (means)",
              " / ".join(f"{v:.2f}" for v in t["startup_parts_s_mean"].values())),
             ("      waiting for a free slot (trials started ahead), s (mean)", t["slot_wait_s_mean"]),
             ("    tear-down per trial, s (mean)", t["teardown_s_mean"]), ("    checkpoint per epoch, s", t["checkpoint_s_per_epoch"]),
             ("    peak memory per worker, MiB (RSS / GPU)", f"{t['peak_rss_mb_per_worker']:.0f} / {t['peak_gpu_mb_per_worker']:.0f}"),
             ("    best trial (val macro-F1)", f"{t['best_trial']} ({t['best_val_macro_f1']:.4f})")]
    if "public" in r:
        pb = r["public"]
        rows += [("(c') ecg-ray tune on Ray's public API: wall s (whole command)", pb["wall_s"]),
                 ("    wall s inside Tune", pb["tune_wall_s"]),
                 ("    Train worker processes", pb["worker_processes"]), ("    sum of epoch times, s", pb["epoch_time_sum_s"]),
                 ("    overhead (whole command)", pb["overhead"]),
                 ("    busy CPU s, all processes (outside epochs)", f"{pb['cpu_s']:.1f} ({pb['cpu_s_outside_epochs']:.1f})"),
                 ("    start-up / tear-down per trial, s (means)", f"{pb['startup_s_mean']:.2f} / {pb['teardown_s_mean']:.2f}"),
                 ("    same metrics as (c), bit for bit", pb["same_metrics"]), ("    (c') wall / (c) wall", pb["public_vs_fast"]),
                 ("    (c') busy CPU s / (c) busy CPU s", pb["public_vs_fast_cpu"])]
    if "plain_tune" in r:
        pt = r["plain_tune"]
        rows += [("(d) plain Ray Tune: wall s (whole process)", pt["wall_s"]), ("    wall s in fit()", pt["fit_s"]),
                 ("    sum of epoch times, s", pt["epoch_time_sum_s"]),
                 ("    overhead (whole process, (c)'s slots)", pt["overhead"]),
                 ("    busy CPU s, all processes", f"{pt['cpu_s']:.1f}"),
                 ("    same metrics as (c), bit for bit", pt["same_metrics"]), ("    (c) wall / (d) wall", pt["ecg_ray_vs_plain"]),
                 ("    (c) busy CPU s / (d) busy CPU s", pt["ecg_ray_vs_plain_cpu"])]
    if "asha" in r:
        a = r["asha"]
        rows += [("(e) with ASHA: wall s", a["wall_s"]), ("    wall-clock saving vs (c)", a["saving"]),
                 ("    epochs run", a["epochs_run"]), ("    same best trial as (c)", a["same_best_trial"])]
    width = max(len(k) for k, _ in rows)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(f"{k.ljust(width)}  {fmt(v)}" for k, v in rows)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
