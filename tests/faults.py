"""Fault scenarios shared by tests/test_faults.py and benchmarks/faults.py.

Each scenario runs `ecg-ray tune` in a subprocess (with its own Ray), injects one
real fault, lets the run (or its resume) finish, and compares the final ranked
table with an uninterrupted run's. Determinism makes that comparison exact.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ecg_ray.results.store.folder import CHECKPOINT_FILE
from ecg_ray.tuning.nodes import kill
from ecg_ray.results.report import build_report
from ecg_ray.results.tables.ranking import comparable
from ecg_ray.schema import EPOCH_COLUMNS, confusion_columns
from helpers import Payload
from localcluster import ENV, LocalCluster

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    """One row of the fault table."""

    fault: str
    trials_affected: int
    retries: int
    finished_trials_rerun: int
    identical: bool | None  # None: the fault is not meant to end in the baseline's table
    detail: str = ""
    handled: str = "recovered"

    def row(self) -> dict:
        return {
            "fault": self.fault,
            "trials affected": self.trials_affected,
            "retries": self.retries,
            "finished trials re-run": self.finished_trials_rerun,
            "final table identical": "n/a" if self.identical is None else ("yes" if self.identical else "no"),
            "handled": self.handled,
        }


EPOCHS = 3  # of every trial of the fault scenarios' experiment


def write_experiment(folder: Path, name: str, storage_path: str | None = None, **resources) -> Path:
    """The quick grid at half its records and 3 epochs, every epoch of every trial (scheduler: none), so
    tables can be compared; its results in folder/results, or under `storage_path` (a bucket)."""
    exp = yaml.safe_load((ROOT / "experiments" / "quick.yaml").read_text())
    exp["name"] = name
    exp["storage_path"] = storage_path or str(folder / "results")
    exp["scheduler"] = {"name": "none"}
    exp["data"]["n_records"], exp["search"]["epochs"] = 400, EPOCHS  # a fault needs a run, not a long one
    exp["resources"] = {**exp.get("resources", {}), **resources}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


class Driver:
    """`ecg-ray tune` in a subprocess, with a private Ray temp dir so it can be cleaned up exactly."""

    def __init__(self, args: list[str], log: Path, address: str | None = None):
        self.tmp = tempfile.mkdtemp(prefix="ecgd", dir="/tmp")
        env = {**os.environ, **ENV, "RAY_TMPDIR": self.tmp}
        cmd = [sys.executable, "-m", "ecg_ray.commands.main", "tune", *args]
        cmd += ["--address", address] if address else ["--num-cpus", "4"]
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()
            self.cleanup()

    def cleanup(self) -> None:
        """Kill whatever Ray processes the driver left behind (after a SIGKILL, say)."""
        kill(os.path.join(self.tmp, "ray"))  # RAY_TMPDIR/ray: Ray's temp dir under RAY_TMPDIR


def results(exp_dir: Path) -> list[dict]:
    """Every epoch any trial reported, in order, from the driver's live progress.jsonl."""
    path = exp_dir / "progress.jsonl"
    out = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written right now
    return out


def wait_for(predicate, driver: Driver, timeout: float = 300, what: str = "") -> dict:
    """Poll until predicate(results) returns a result line; fail if the driver exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.proc.poll() is not None:
            raise RuntimeError(f"driver exited ({driver.proc.returncode}) before {what}; see {driver.log.name}")
        hit = predicate()
        if hit:
            return hit
        time.sleep(0.2)
    raise TimeoutError(f"no {what} within {timeout}s")


def retries(exp_dir: Path) -> dict[str, int]:
    """Worker restarts per trial: distinct Train worker processes that reported for it, minus one."""
    pids: dict[str, set] = {}
    for r in results(exp_dir):
        pids.setdefault(r["trial_id"], set()).add(r["worker_pid"])
    return {t: len(p) - 1 for t, p in pids.items()}


def tables(exp_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranked table and every epoch of every trial (the history), without what says where and
    when they ran."""
    ranked, history = build_report(exp_dir)
    return comparable(ranked), history[["trial_id", *EPOCH_COLUMNS, *confusion_columns()]].reset_index(drop=True)


def same_table(exp_dir: Path, baseline: Path) -> bool:
    """The ranked table and every epoch of the history equal the uninterrupted run's: a fault
    neither changes a number nor loses an epoch's line."""
    return all(a.shape == b.shape and a.equals(b) for a, b in zip(tables(exp_dir), tables(baseline)))


def run_baseline(work: Path) -> Path:
    exp = write_experiment(work, "baseline")
    assert Driver([str(exp)], work / "baseline.log").wait() == 0, (work / "baseline.log").read_text()[-3000:]
    return work / "results" / "baseline"


def _kill_after_first_epoch(work: Path, baseline: Path, name: str, pid_key: str, fault: str) -> Outcome:
    """SIGKILL the process progress.jsonl names under `pid_key` once a trial has reported its first
    epoch; Tune retries the trial, which resumes from its checkpoint."""
    exp = write_experiment(work, name)
    exp_dir = work / "results" / name
    driver = Driver([str(exp)], work / f"{name}.log")
    hit = wait_for(lambda: next((r for r in results(exp_dir) if r["epoch"] == 1), None), driver, what="a first epoch")
    os.kill(hit[pid_key], signal.SIGKILL)
    rc = driver.wait()
    restarts = retries(exp_dir)
    return Outcome(fault, sum(1 for n in restarts.values() if n), sum(restarts.values()), 0,
                   rc == 0 and same_table(exp_dir, baseline), f"rc={rc}")


def kill_worker(work: Path, baseline: Path) -> Outcome:
    """SIGKILL a trial's Ray Train worker process after its first epoch."""
    return _kill_after_first_epoch(work, baseline, "kill_worker", "worker_pid", "SIGKILL of a trial's Train worker")


def kill_tune_actor(work: Path, baseline: Path) -> Outcome:
    """SIGKILL a trial's Tune actor (the process that runs its Train controller; its worker goes with
    it) after its first epoch."""
    return _kill_after_first_epoch(work, baseline, "kill_tune_actor", "pid", "SIGKILL of a trial's Tune actor")


def _finished_lines(exp_dir: Path) -> dict[str, int]:
    status = json.loads((exp_dir / "trial_status.json").read_text()) if (exp_dir / "trial_status.json").exists() else {}
    done = {t for t, s in status.items() if s["status"] == "TERMINATED"}
    counts: dict[str, int] = {}
    for r in results(exp_dir):
        if r["trial_id"] in done:
            counts[r["trial_id"]] = counts.get(r["trial_id"], 0) + 1
    return counts


def stop_driver(work: Path, baseline: Path, sig: signal.Signals) -> Outcome:
    """Stop the driver with `sig` once one trial finished and another is mid-way, then resume."""
    name = f"driver_{sig.name.lower()}"
    exp = write_experiment(work, name, max_concurrent_trials=1)  # trials in turn: one done, one mid-way
    exp_dir = work / "results" / name
    driver = Driver([str(exp)], work / f"{name}.log")

    def second_trial_started():
        rs = results(exp_dir)
        done = {r["trial_id"] for r in rs if r["epoch"] == EPOCHS}
        return done and next((r for r in rs if r["trial_id"] not in done and r["epoch"] == 1), None)

    wait_for(second_trial_started, driver, what="the second trial's first epoch")
    driver.proc.send_signal(sig)
    rc_stop = driver.wait()
    stopped = build_report(exp_dir)[0]  # an interrupted folder reports without re-running anything
    assert (stopped["status"] == "TERMINATED").sum() >= 1, stopped
    before = _finished_lines(exp_dir)
    interrupted_epochs = {r["trial_id"]: r["epoch"] for r in results(exp_dir)}
    rc = Driver(["--resume", str(exp_dir)], work / f"{name}.log").wait()
    after = _finished_lines(exp_dir)
    rerun = sum(1 for t, n in before.items() if after.get(t, 0) != n)
    affected = sum(1 for t, e in interrupted_epochs.items() if e < EPOCHS)
    return Outcome(f"{sig.name} of the driver, then --resume", affected, 1, rerun,
                   rc == 0 and same_table(exp_dir, baseline), f"stop rc={rc_stop}, resume rc={rc}")


def lose_node(work: Path, baseline: Path, bucket: str | None = None) -> Outcome:
    """Two-node cluster; kill every process of the worker node while a trial trains there.

    With `bucket` (a URI) the results live there and nowhere else, as on a cluster whose nodes share
    no disk (each node of LocalCluster has its own temp dir, HOME and TMPDIR): the lost trial resumes
    on the other node from the checkpoint in the bucket. The moment to kill is read from the bucket
    too: a checkpoint whose epoch ran on the doomed node."""
    from ecg_ray import storage

    cluster = LocalCluster()
    try:
        cluster.start_head(num_cpus=2)
        cluster.add_node("w1", 2, {"doomed": 1})
        doomed = next(n["NodeID"] for n in cluster.nodes_info() if "doomed" in n["Resources"])
        exp = write_experiment(work, "lose_node", bucket)
        exp_dir = storage.join(bucket, "lose_node") if bucket else str(work / "results" / "lose_node")
        driver = Driver([str(exp)], work / "lose_node.log", address=cluster.address)
        if bucket:
            # The checkpoint reaches the bucket before its result reaches the driver: kill between the two
            # and Tune never knew the epoch ran there (it reruns it elsewhere, and nothing was affected).
            # So wait for the driver's own line of that epoch too.
            hit = wait_for(lambda: _epoch_on(exp_dir, doomed), driver, what="a checkpoint of an epoch on the worker node")
            line = f"[ecg-ray] {hit['trial_id']} "
            wait_for(lambda: any(l.startswith(line) and f": epoch {hit['epoch']}/" in l
                                 for l in Path(driver.log.name).read_text(errors="replace").splitlines()),
                     driver, what=f"the driver's line of {hit['trial_id']} epoch {hit['epoch']}")
        else:
            wait_for(lambda: next((r for r in results(Path(exp_dir)) if r["node_id"] == doomed and r["epoch"] < EPOCHS), None),
                     driver, what="an epoch on the worker node")
        cluster.kill_node("w1")
        rc = driver.wait()
        history = build_report(exp_dir)[1]
        affected = set(history.loc[history["node_id"] == doomed, "trial_id"])
        moved = set(history.loc[history["trial_id"].isin(affected) & (history["node_id"] != doomed), "trial_id"])
        return Outcome("loss of a worker node (all its processes killed)", len(affected), len(moved), 0,
                       rc == 0 and same_table(exp_dir, baseline) and moved == affected, f"rc={rc}")
    finally:
        cluster.stop()


def _epoch_on(exp_dir: str, node_id: str) -> dict | None:
    """The metrics (and trial) of a checkpoint in the bucket whose epoch (not the last) ran on `node_id`, if any."""
    import io

    from ecg_ray import storage
    from ecg_ray.training.loop import read_checkpoint

    runs = storage.join(exp_dir, "train_runs")
    for rel in storage.files(runs):
        if rel.endswith("/" + CHECKPOINT_FILE):
            try:
                metrics = read_checkpoint(io.BytesIO(storage.read_bytes(storage.join(runs, rel))))["metrics"]
            except Exception:  # noqa: BLE001  (an object being written right now)
                continue
            if metrics.get("node_id") == node_id and metrics["epoch"] < EPOCHS:
                return {**metrics, "trial_id": rel.split("/")[0]}
    return None




def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_ray.commands.main", *args], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=600)


def planted_pickle(work: Path, baseline: Path) -> Outcome:
    """A copy of a finished folder with pickles planted where Tune keeps state, one trial marked unfinished,
    its latest checkpoint replaced by a pickle and its other one cut short (a disk that filled up)."""
    copy = work / "results" / "planted"
    shutil.copytree(baseline, copy)
    marker = work / "PLANTED_PAYLOAD_RAN"
    for rel in ("tuner.pkl", "experiment_state-2099-01-01_00-00-00.json", "searcher-state-2099-01-01.pkl",
                "train_runs/t0001/state.pkl"):
        (copy / rel).write_bytes(pickle.dumps(Payload(marker)))
    *older, latest = sorted((copy / "train_runs" / "t0001").glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    latest.write_bytes(pickle.dumps(Payload(marker)))
    for ckpt in older:
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    status = json.loads((copy / "trial_status.json").read_text())
    del status["t0001"]
    (copy / "trial_status.json").write_text(json.dumps(status))
    log = work / "planted.log"
    rc = Driver(["--resume", str(copy)], log).wait()
    rc_report = _cli("report", str(copy)).returncode
    ran = marker.exists()
    restarted = "cannot be read safely (UnpicklingError" in log.read_text(errors="replace")
    return Outcome("planted pickles and a cut-off checkpoint in a copied folder, then --resume and report", 1, 0, 0,
                   rc == 0 and rc_report == 0 and not ran and same_table(copy, baseline),
                   f"resume rc={rc}, report rc={rc_report}, payload ran: {ran}, trial restarted from epoch 1: {restarted}",
                   "never loaded" if not ran else "LOADED")


def concurrent_run(work: Path, baseline: Path | None, name: str = "concurrent") -> Outcome:
    """A second `ecg-ray tune` on the same experiment folder while the first one runs. With `baseline`
    None the first run is the baseline itself (the tests' way: one run fewer), compared with nothing."""
    exp = write_experiment(work, name)
    exp_dir = work / "results" / name
    first = Driver([str(exp)], work / f"{name}.log")
    # Once the first holds the folder (its lock names it), it has a Ray to start and trials to run: seconds
    # more than the second needs to reach the lock. (Waiting for its first epoch raced the end of a short run.)
    lock = work / "results" / f".{name}.lock"
    wait_for(lambda: lock.is_file() and lock.read_text().strip(), first, what="the first run's lock")
    second = _cli("tune", str(exp), "--num-cpus", "4")
    refused = second.returncode == 2 and "is in use by another `ecg-ray tune`" in second.stderr
    rc = first.wait()
    same = baseline is None or same_table(exp_dir, baseline)
    return Outcome("a second tune on the same folder while one runs", 0, 0, 0, rc == 0 and refused and same,
                   f"second rc={second.returncode}, first rc={rc}", "refused at once" if refused else "NOT refused")


def corrupt_result(work: Path, baseline: Path) -> Outcome:
    """A line of a trial's result.json damaged, then `ecg-ray report`."""
    copy = work / "results" / "corrupt"
    shutil.copytree(baseline, copy)
    path = sorted(copy.glob("*/result.json"))[0]
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:50]
    path.write_text("\n".join(lines) + "\n")
    strict, partial = _cli("report", str(copy)), _cli("report", str(copy), "--allow-partial")
    named = strict.returncode == 2 and f"{path}, line 2" in strict.stderr and f"{path}, line 2" in partial.stderr
    return Outcome("a corrupt line in a trial's result.json, then report", 1, 0, 0, None,
                   f"report rc={strict.returncode}, --allow-partial rc={partial.returncode}",
                   "named; --allow-partial writes the rest" if named and partial.returncode == 0 else "NOT named")


SCENARIOS = {
    "kill_worker": kill_worker,
    "kill_tune_actor": kill_tune_actor,
    "sigint_driver": lambda w, b: stop_driver(w, b, signal.SIGINT),
    "sigkill_driver": lambda w, b: stop_driver(w, b, signal.SIGKILL),
    "lose_node": lose_node,
    "planted_pickle": planted_pickle,
    "concurrent_run": concurrent_run,
    "corrupt_result": corrupt_result,
}
