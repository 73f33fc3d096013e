"""ecg-ray stop-node: one Ray instance stopped by its temp dir, a neighbour's left running."""

import contextlib
import os
import subprocess
import sys
import time

import psutil
import pytest
from localcluster import LocalCluster, listened_on

from ecg_ray.errors import ConfigError
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


def _sleeper(*args: str) -> subprocess.Popen:
    """A child whose command line names `args`, returned once it does (before exec it still shows ours)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
    deadline = time.monotonic() + 30
    while psutil.Process(child.pid).cmdline()[-len(args):] != list(args) and time.monotonic() < deadline:
        time.sleep(0.01)
    return child


def test_only_a_path_below_a_session_folder_of_dir_matches(tmp_path):
    (tmp_path / "ray2" / "session_1").mkdir(parents=True)
    (tmp_path / "other" / "ray2" / "session_1").mkdir(parents=True)
    mine = _sleeper(f"--session-dir={tmp_path}/ray2/session_1")
    others = [_sleeper(f"--temp-dir={tmp_path}/ray2"),  # names DIR but nothing of a session in it
              _sleeper(f"{tmp_path}/ray2/notes.txt"),  # a path below DIR that is not Ray's
              _sleeper(f"--log-dir={tmp_path}/other{tmp_path}/ray2/session_1/logs")]  # another folder ending the same way
    try:
        assert [p.pid for p in processes(f"{tmp_path}/ray2")] == [mine.pid]
        assert processes(f"{tmp_path}/ray") == []  # a prefix of DIR is not DIR
    finally:
        for child in (mine, *others):
            child.kill()
            child.wait()


@pytest.mark.parametrize("where", ["/", "~", "/usr", "/home"])
def test_stop_node_refuses_root_a_home_or_a_system_folder_and_stops_nothing(where):
    bystander = _sleeper("/tmp/x", os.path.expanduser("~/y"))  # names paths below each refused folder
    try:
        out = _stop_node(where)
        assert out.returncode == 2 and out.stdout == ""
        (line,) = out.stderr.splitlines()
        assert "refusing" in line and "--temp-dir" in line and "Traceback" not in out.stderr
        assert bystander.poll() is None
        with pytest.raises(ConfigError, match="a system folder or a home"):
            processes(where)
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_node_refuses_a_folder_without_a_ray_session_and_stops_nothing(tmp_path):
    (tmp_path / "logs").mkdir()
    bystander = _sleeper(f"--temp-dir={tmp_path}", f"{tmp_path}/logs/x.log")
    try:
        out = _stop_node(str(tmp_path))
        assert out.returncode == 2 and bystander.poll() is None
        (line,) = out.stderr.splitlines()
        assert "holds no Ray session" in line and str(tmp_path) in line
        (tmp_path / "file").write_text("")
        assert "is a file" in _stop_node(str(tmp_path / "file")).stderr
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_node_on_a_dir_no_ray_has_used_yet_is_a_no_op(tmp_path):
    """cluster-onprem.yaml runs it before the first `ray start` on a host: the folder does not exist yet."""
    out = _stop_node(str(tmp_path / "ecg_ray_cluster"))
    assert out.returncode == 0 and "nothing to stop" in out.stdout and not (tmp_path / "ecg_ray_cluster").exists()


def _stop_node(where: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_ray.commands.main", "stop-node", "--temp-dir", where, "--grace-period", "1"],
                          capture_output=True, text=True, timeout=120)


def test_a_process_named_only_by_its_open_log_is_found_with_its_children(tmp_path):
    """Ray's agents retitle themselves (`ray::DashboardAgent`); the log they write under DIR gives them away."""
    logs = tmp_path / "ray2" / "session_1" / "logs"  # Ray's layout: DIR/session_*/logs
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
    finally:  # only what this test started: the session's own Ray is a child of this process too
        with contextlib.suppress(psutil.Error):
            for p in [psutil.Process(agent.pid), *psutil.Process(agent.pid).children(recursive=True)]:
                p.kill()
        agent.wait()
