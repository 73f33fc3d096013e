"""What a real local Ray run exposes and refuses: loopback only, unplaceable trials, a Ray that cannot start."""

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from ecg_ray.errors import ConfigError
from helpers import fast_path_only, live_placement_groups

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback  # ::ffff:127.0.0.1 is loopback too


def test_a_local_run_listens_on_loopback_only(tmp_path):
    exp = yaml.safe_load((ROOT / "experiments" / "quick.yaml").read_text())
    exp.update(storage_path=str(tmp_path / "results"), scheduler={"name": "none"})
    exp["data"]["n_records"] = 200
    exp["search"] |= {"epochs": 1, "lr": 0.001}  # one trial: Ray's servers are what is measured
    exp["report"] = {"latency_repeats": 0}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    ray_tmp = tempfile.mkdtemp(prefix="ecgl", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "ECG_RAY_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # as a user's shell has it: the CLI itself must set it
    proc = subprocess.Popen([sys.executable, "-m", "ecg_ray.commands.main", "tune", str(tmp_path / "e.yaml"), "--num-cpus", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listening: dict[str, set] = {}
    try:
        while proc.poll() is None:
            try:
                family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in family:
                try:
                    for c in p.net_connections(kind="inet"):
                        if c.status == psutil.CONN_LISTEN:
                            listening.setdefault(c.laddr.ip, set()).add(p.name())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            time.sleep(0.5)
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, out[-3000:]
    names = set().union(*listening.values()) if listening else set()
    assert {"gcs_server", "raylet"} <= names  # the measurement saw Ray's servers
    assert all(_is_loopback(ip) for ip in listening), {ip: names for ip, names in listening.items() if not _is_loopback(ip)}


@fast_path_only()
def test_a_local_ray_starts_without_the_services_of_a_cluster(ray_local):
    """The session's Ray is started as `ecg-ray tune` starts one: GCS, raylet and its agents, but no
    autoscaler monitor and no dashboard process (ecg_ray.tuning._ray_internals.head_without_cluster_services), and
    Ray's own Node methods are themselves again once it is up."""
    from ray._private import ray_constants, worker
    from ray._private.node import Node

    started = set(worker._global_node.all_processes)
    assert {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET} <= started
    assert not started & {ray_constants.PROCESS_TYPE_MONITOR, ray_constants.PROCESS_TYPE_DASHBOARD}
    assert (Node.start_monitor.__qualname__, Node.start_api_server.__qualname__) == ("Node.start_monitor", "Node.start_api_server")


def test_a_trial_that_no_node_can_hold_is_refused_on_a_local_ray(ray_local):
    from ecg_ray.tuning.resources import check_placeable

    with pytest.raises(ConfigError, match=r"asks for \{'CPU': 64.5\}, but this local Ray has no node with that much"):
        check_placeable({"CPU": 64}, {"CPU": 0.5}, local=True)
    check_placeable({"CPU": 1}, {"CPU": 0.5}, local=True)  # the quick grid fits


def test_on_a_cluster_it_is_a_warning_the_autoscaler_may_add_nodes(ray_local, capsys):
    from ecg_ray.tuning.resources import check_placeable

    check_placeable({"CPU": 1, "GPU": 1}, {"CPU": 0.5}, local=False)
    assert "trials wait until the autoscaler adds such a node" in capsys.readouterr().out


def test_a_ray_that_cannot_be_reached_is_one_paragraph_with_the_remedy(tmp_path):
    code = "from ecg_ray.tuning.ray_session import init_ray, RAY_START_ATTEMPTS\nimport ecg_ray.tuning.ray_session as t\nt.RAY_START_ATTEMPTS = 1\n" \
           "init_ray(address='127.0.0.1:9')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "EcgRayError: Could not connect to the Ray cluster at 127.0.0.1:9 after 1 attempts" in proc.stderr
    assert "Check that the cluster is up" in proc.stderr


def test_a_local_ray_runs_only_as_many_trials_as_fit_with_their_drivers(ray_local):
    """Tune would start a CPU-holding driver for every trial until the CPUs are gone, leaving none
    for any Train worker. On the session's 4-CPU local Ray: drivers without a CPU (the default) and
    one-CPU workers run 4 at a time; drivers of 0.5 CPU, 2 at a time."""
    from ecg_ray.config import experiment_from_dict
    from ecg_ray.config import RunSettings
    from ecg_ray.tuning.resources import concurrency

    settings = RunSettings(use_gpu=False, resources_per_worker={"CPU": 1}, threads=1, data_hash="x", max_failures=0)
    assert concurrency(experiment_from_dict({}), settings, local=True) == 4
    assert concurrency(experiment_from_dict({"resources": {"cpus_per_trial_driver": 0.5}}), settings, local=True) == 2
    assert concurrency(experiment_from_dict({"resources": {"max_concurrent_trials": 1}}), settings, local=True) == 1
    assert concurrency(experiment_from_dict({}), settings, local=False) == 0  # a cluster's autoscaler may add nodes


def test_a_killed_trial_actor_frees_its_workers_resources_and_the_trial_resumes(ray_local, tmp_path, capsys):
    """Ray Train's controller runs in each trial's Tune actor. SIGKILL that process mid-trial: its
    worker dies with it, but the worker's placement group would hold its CPU until the job ends.
    The Tune driver releases it when Tune sees the trial fail; Tune retries the trial from its
    checkpoint, and no epoch is missing from the history."""
    import threading

    from ecg_ray.commands.main import main
    from ecg_ray.results.report import build_report

    exp = yaml.safe_load((ROOT / "experiments" / "quick.yaml").read_text())
    exp.update(name="killed", storage_path=str(tmp_path), scheduler={"name": "none"})
    exp["data"]["n_records"] = 200
    exp["search"]["epochs"] = 3
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(exp))
    progress, killed, unsaved, running = tmp_path / "killed" / "progress.jsonl", [], [], [True]

    def kill_a_trial_actor_after_the_first_epoch():
        deadline = time.monotonic() + 180
        while not killed and time.monotonic() < deadline:
            if progress.is_file() and progress.read_text().strip():
                actors = [p for p in psutil.process_iter(["cmdline"]) if "ray::ImplicitFunc" in " ".join(p.info["cmdline"] or [])]
                if actors:
                    actors[0].kill()
                    killed.append(actors[0].pid)
            time.sleep(0.1)

    def check_each_epoch_is_in_the_folder_when_it_is_announced():
        """An epoch in progress.jsonl is already in the trial's result.json in the experiment folder
        (not only in Tune's staging folder): a driver killed right then loses nothing."""
        seen = 0
        while running[0]:
            lines = progress.read_text().splitlines() if progress.is_file() else []
            for line in lines[seen:]:
                p = json.loads(line)
                saved = {json.loads(r)["epoch"] for f in (tmp_path / "killed").glob("*/result.json")
                         if json.loads((f.parent / "params.json").read_text())["trial_key"] == p["trial_id"]
                         for r in f.read_text().splitlines() if r.strip()}
                if p["epoch"] not in saved:
                    unsaved.append((p["trial_id"], p["epoch"]))
            seen = len(lines)
            time.sleep(0.02)

    threads = [threading.Thread(target=f, daemon=True) for f in (kill_a_trial_actor_after_the_first_epoch,
                                                                 check_each_epoch_is_in_the_folder_when_it_is_announced)]
    for t in threads:
        t.start()
    assert main(["tune", str(tmp_path / "killed.yaml"), "--format", "csv"]) == 0
    running[0] = False
    for t in threads:
        t.join()
    assert killed, "no trial actor was found to kill"
    assert unsaved == []
    out = capsys.readouterr().out  # a line for the failure and one per trial's end
    assert "failed; Tune retries it from its last checkpoint" in out and "Trials: 2 of 2 ended, 0 running" in out
    trials, history = build_report(tmp_path / "killed")
    assert sorted(trials["status"]) == ["TERMINATED", "TERMINATED"]
    assert sorted(zip(history["trial_id"], history["epoch"])) == [(t, e) for t in ("t0000", "t0001") for e in (1, 2, 3)]
    assert live_placement_groups(ray_local, wait_s=10) == []  # the dead trial's worker group left nothing held


def test_a_local_ray_stopped_in_the_background_is_started_again_by_the_next_run():
    """`ecg-ray tune` stops the Ray it started while it writes the report; a second run in the same
    process waits for that shutdown and starts a fresh Ray instead of joining the dying one."""
    code = ("import ray\nfrom ecg_ray.tuning import ray_session as tune\ntune.init_ray(num_cpus=1)\nfirst = ray.get_runtime_context().get_node_id()\n"
            "tune._stop_ray_in_background()\ntune.init_ray(num_cpus=1)\n"
            "assert ray.get(ray.remote(lambda: 1).remote()) == 1\n"
            "print('fresh', ray.get_runtime_context().get_node_id() != first)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "fresh True"
