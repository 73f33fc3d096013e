"""Writers for every input format, so tests make their own files (good and bad)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import yaml

from ecg_ray.data.records import LABEL_NAMES, RecordSet


def tiny_experiment(folder: Path, name: str, storage: Path, search: dict | None = None, data: dict | None = None,
                    resources: dict | None = None, scheduler: dict | None = None) -> Path:
    """experiments/quick.yaml cut to a Ray run of seconds (120 records, 1 epoch, no scheduler, no latency
    timing), written to folder/NAME.yaml; `search`, `data` and `resources` update those sections,
    `scheduler` replaces it."""
    exp = yaml.safe_load(Path("experiments/quick.yaml").read_text())
    exp |= {"name": name, "storage_path": str(storage), "scheduler": scheduler or {"name": "none"},
            "report": {"latency_repeats": 0}}
    exp["data"] |= {"n_records": 120, **(data or {})}
    exp["search"] |= {"epochs": 1, **(search or {})}
    exp["resources"] = {**exp.get("resources", {}), **(resources or {})}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


# `ecg-ray tune` as it runs on a Ray release this project has not tested (ecg_ray.tuning.fast_path):
# no fast path and none of Ray's private settings, so Ray's defaults hold.
AS_UNTESTED_RAY = ("import sys; from ecg_ray.tuning import fast_path; fast_path.TESTED_RAY = ('0.0.1',); "
                   "from ecg_ray.commands.main import main; sys.exit(main())")


def tune_in_subprocess(exp_file: Path, num_cpus: int, untested_ray: bool = False) -> str:
    """`ecg-ray tune EXP_FILE` in a subprocess, on the local Ray it starts with `num_cpus` CPUs (with
    `untested_ray`, as on a Ray release the project has not tested); it must succeed. Returns what it printed."""
    command = ["-c", AS_UNTESTED_RAY] if untested_ray else ["-m", "ecg_ray.commands.main"]
    run = subprocess.run([sys.executable, *command, "tune", str(exp_file), "--num-cpus", str(num_cpus)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


@contextlib.contextmanager
def mlflow_server(root: Path):
    """`mlflow server` on 127.0.0.1 (SQLite backend, local artifact root) while the block runs; yields its URI."""
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "artifacts"),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def read_table(location: str) -> pd.DataFrame:
    """A CSV table of an experiment folder, local or in a bucket (through ecg_ray's storage layer)."""
    import io

    from ecg_ray import storage

    return pd.read_csv(io.BytesIO(storage.read_bytes(str(location))))


def read_json(location: str):
    """A JSON file of an experiment folder, local or in a bucket."""
    from ecg_ray import storage

    return json.loads(storage.read_bytes(str(location)))


def write_challenge(folder: Path, records: RecordSet, fs: int = 300) -> Path:
    """The CinC 2017 layout: AXXXXX.mat (MATLAB v4, int16 `val`) + .hea, REFERENCE.csv, RECORDS."""
    folder.mkdir(parents=True, exist_ok=True)
    for rec, sig in zip(records.ids, records.signals):
        val = np.round(np.asarray(sig)).astype(np.int16)
        scipy.io.savemat(folder / f"{rec}.mat", {"val": val[None, :]}, format="4")
        first = int(val[0]) if len(val) else 0
        (folder / f"{rec}.hea").write_text(
            f"{rec} 1 {fs} {len(val)} 08:03:08 1/03/2000 \n{rec}.mat 16+24 1000/mV 16 0 {first} 0 0 ECG \n"
        )
    (folder / "REFERENCE.csv").write_text("".join(f"{r},{LABEL_NAMES[l]}\n" for r, l in zip(records.ids, records.labels)))
    (folder / "RECORDS").write_text("".join(f"{r}\n" for r in records.ids))
    return folder


def frame(records: RecordSet) -> pd.DataFrame:
    """The notebook's DataFrame: `signal` (float64 arrays) and `label` (int)."""
    return pd.DataFrame({"signal": [np.asarray(s, dtype=np.float64) for s in records.signals], "label": records.labels})


def write_pickle(path: Path, records: RecordSet) -> Path:
    frame(records).to_pickle(path)
    return path


def live_placement_groups(ray, wait_s: float = 20.0) -> list:
    """Placement groups still holding resources, after giving the driver `wait_s` to release those of
    trials that ended (the fast path's release_placement_group, Ray Train's cleaner on the public path)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        live = [pg for pg, info in ray.util.placement_group_table().items() if info["state"] in ("CREATED", "PENDING")]
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.5)


def fast_path_only():
    """A mark for tests of the fast path's own machinery: skipped on a Ray it is not tested with
    (the public path runs there; ecg_ray.tuning.fast_path)."""
    import pytest

    from ecg_ray.tuning import fast_path

    return pytest.mark.skipif(not fast_path.choose("auto").fast, reason="the fast path is not tested on this Ray")


def fake_epoch(trial_id, epoch, f1, val_loss=1.0):
    """One epoch as Tune writes it into result.json, every metric a function of `f1`."""
    r = {"trial_id": trial_id, "epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5, "val_loss": val_loss,
         "val_acc": 0.6, "val_macro_f1": f1, "val_challenge_f1": f1 + 0.01, "epoch_time_s": 2.0,
         "time_total_s": 3.0 * epoch, "node_id": "n1", "data_hash": "abc", "val_confusion": np.eye(4, dtype=int).tolist()}
    for k in ("N", "A", "O", "noisy"):
        r |= {f"val_f1_{k}": f1, f"val_precision_{k}": f1, f"val_recall_{k}": f1}
    return r


def fake_trial(exp, trial_id, lr, f1s, losses=None, tail=""):
    """A Tune trial folder (params.json, result.json) under `exp`, as a run leaves it; `tail`: a cut-off last line."""
    d = exp / f"_trial_driver_{trial_id}_lr={lr}"
    d.mkdir(parents=True)
    params = {"lr": lr, "hidden_size": 128, "dropout": 0.2, "optimizer": "adam", "batch_size": 32, "epochs": 4, "seed": 42,
              "trial_key": trial_id}
    (d / "params.json").write_text(json.dumps(params))
    losses = losses or [1.0] * len(f1s)
    lines = [json.dumps(fake_epoch(trial_id, e + 1, f, l)) for e, (f, l) in enumerate(zip(f1s, losses))]
    (d / "result.json").write_text("\n".join(lines) + "\n" + tail)
    return d


def fake_experiment(exp: Path, trials: list[tuple], data_hash: str = "feedc0ffee123456", split: dict | None = None,
                    test_predictions: dict | None = None, costs: dict | None = None) -> Path:
    """A finished experiment folder as `ecg-ray tune` leaves it, without running it: `trials` are
    (key, params, f1 per epoch) with params updating fake_trial's; the record names `data_hash`,
    data_splits.json `split` (default: 240 train / 80 val ids); test predictions and costs.json
    when given."""
    for key, params, f1s in trials:
        d = fake_trial(exp, key, params.get("lr", 0.001), f1s)
        path = d / "params.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | params | {"epochs": len(f1s), "trial_key": key}))
    (exp / "trial_status.json").write_text(json.dumps({k: {"status": "TERMINATED", "last_epoch": len(f)} for k, _, f in trials}))
    record = {"config": {"name": exp.name, "scheduler": {"name": "none"}}, "data_hash": data_hash,
              "created": "2026-12-04T09:00:00+0000",
              "data": {"source": "synthetic(n=400)", "fingerprint": "f" * 64, "skipped": [],
                       "settings": {"source": "synthetic", "target_length": 9000, "sampling_rate": 300, "seed": 42}}}
    (exp / "ecg_ray_experiment.json").write_text(json.dumps(record))
    split = split or {"train": [f"r{i}" for i in range(240)], "val": [f"v{i}" for i in range(80)]}
    (exp / "data_splits.json").write_text(json.dumps({"data_hash": data_hash, "ids": split}))
    if test_predictions is not None:
        (exp / "test_predictions.json").write_text(json.dumps(test_predictions))
    if costs is not None:
        (exp / "costs.json").write_text(json.dumps(costs))
    return exp


class Payload:
    """Unpickling this runs a shell command that creates `marker`: what a planted file in a shared folder
    or bucket could do, and the proof that a pickle was loaded (the one such payload of the tests)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def easy_records(n: int, seed: int, prefix: str):
    """`n` easy synthetic records (ecg_ray's generator) with ids PREFIX00000, PREFIX00001, ..."""
    from ecg_ray.data.synthetic import generate

    rs = generate(n, seed=seed, difficulty="easy")
    rs.ids = [f"{prefix}{i:05d}" for i in range(n)]
    return rs
