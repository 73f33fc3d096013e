"""ecg-ray stop-node: one Ray instance stopped by its temp dir, a neighbour's left running."""

import subprocess
import sys
import time

import psutil
import pytest
from localcluster import LocalCluster, listened_on

from ecg_ray.tuning.nodes import kill, processes, stop


@pytest.mark.cluster
def test_stop_node_ends_one_instance_and_spares_its_neighbour(tmp_path):
    mine, neighbour = LocalCluster().start_head(num_cpus=1), LocalCluster().start_head(num_cpus=1)
    try:
        mine_dir = f"{mine.root}/head"
        assert processes(mine_dir) and len(processes(mine_dir)) == len(mine.processes())
        assert all(listened_on(port) for port in mine.ports["head"])
        before = {p.pid for p in neighbour.processes()}
        # Through the CLI in a shell whose command line names the dir, as cluster-onprem.yaml runs it.
        out = subprocess.run(["bash", "-c", f"{sys.executable} -m ecg_ray.commands.main stop-node --temp-dir {mine_dir} --grace-period 5"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "stopped" in out.stdout and processes(mine_dir) == [] and mine.processes() == []
        # Found without the finder under test: nothing listens on a port the instance was given (the
        # agents that retitle themselves `ray::DashboardAgent` and the Ray Client server once outlived it).
        assert [port for port in mine.ports["head"] if listened_on(port)] == []
        assert all(listened_on(port) for port in (neighbour.port, neighbour.dashboard_port))
        assert {p.pid for p in neighbour.processes()} == before  # every process of the other instance lives on
        assert stop(mine_dir) == 0
    finally:
        mine.stop()
        neighbour.stop()


def test_a_prefix_of_another_dir_is_not_a_match(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"--temp-dir={tmp_path}/ray2"])
    try:
        assert [p.pid for p in processes(f"{tmp_path}/ray2")] == [child.pid]
        assert processes(f"{tmp_path}/ray") == []
    finally:
        child.kill()
        child.wait()


def test_a_process_named_only_by_its_open_log_is_found_with_its_children(tmp_path):
    """Ray's agents retitle themselves (`ray::DashboardAgent`); the log they write under DIR gives them away."""
    logs = tmp_path / "ray2" / "session_1" / "logs"
    logs.mkdir(parents=True)
    spawn = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], stdout=subprocess.DEVNULL); time.sleep(60)"
    with open(logs / "dashboard_agent.out", "w") as log:
        agent = subprocess.Popen([sys.executable, "-c", spawn], stdout=log)
    try:
        deadline = time.monotonic() + 30
        while not psutil.Process(agent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        both = [psutil.Process(agent.pid), *psutil.Process(agent.pid).children()]
        assert {p.pid for p in processes(f"{tmp_path}/ray2")} == {p.pid for p in both} and len(both) == 2
        assert processes(f"{tmp_path}/ray") == []  # a prefix of DIR is not DIR
        assert kill(f"{tmp_path}/ray2") == 2
        assert not any(p.is_running() for p in both)
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()
