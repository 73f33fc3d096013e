"""ecg-ray stop-node: one Ray instance stopped by its temp dir, a neighbour's left running."""

import subprocess
import sys

import pytest
from localcluster import LocalCluster

from ecg_ray.nodes import processes, stop


@pytest.mark.cluster
def test_stop_node_ends_one_instance_and_spares_its_neighbour(tmp_path):
    mine, neighbour = LocalCluster().start_head(num_cpus=1), LocalCluster().start_head(num_cpus=1)
    try:
        mine_dir = f"{mine.root}/head"
        assert processes(mine_dir) and len(processes(mine_dir)) == len(mine.processes())
        before = {p.pid for p in neighbour.processes()}
        # Through the CLI in a shell whose command line names the dir, as cluster-onprem.yaml runs it.
        out = subprocess.run(["bash", "-c", f"{sys.executable} -m ecg_ray.cli stop-node --temp-dir {mine_dir} --grace-period 5"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "stopped" in out.stdout and processes(mine_dir) == [] and mine.processes() == []
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
