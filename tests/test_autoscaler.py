"""The autoscaler with cluster.yaml's node types, on Ray's fake multi-node provider.

The fake config is derived from cluster.yaml (so the two cannot drift): same
cluster name and node types, worker counts capped for a 2-core machine, and the
GPU replaced by a custom resource (there is no CUDA here). Workers start at zero;
the quick grid makes the autoscaler add GPU-type nodes, trials run there, and
the idle nodes go away afterwards.
"""

import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from localcluster import LocalCluster
from test_cluster import write_experiment

pytestmark = pytest.mark.cluster

FAKE_HEAD = "ray.head.default"  # the fake provider's fixed name for the head node type
STAND_IN = "gpu_node"


def fake_config(cluster_yaml: Path, gcs_address: str, max_nodes: int = 2) -> dict:
    raw = yaml.safe_load(cluster_yaml.read_text())
    types = {FAKE_HEAD: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}}
    for name, node_type in raw["available_node_types"].items():
        if name == raw["head_node_type"]:
            continue
        res = dict(node_type["resources"])
        gpus = res.pop("GPU", 0)
        res["CPU"] = min(res.get("CPU", 1), 2)
        if gpus:
            res[STAND_IN] = gpus
        types[name] = {"resources": res, "node_config": {}, "min_workers": node_type.get("min_workers", 0),
                       "max_workers": min(node_type["max_workers"], max_nodes)}
    return {
        "cluster_name": raw["cluster_name"],
        "max_workers": min(raw["max_workers"], max_nodes),
        "upscaling_speed": raw["upscaling_speed"],
        "idle_timeout_minutes": 0.2,  # seconds here, not cluster.yaml's minutes
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": raw["auth"]["ssh_user"]},
        "available_node_types": types,
        "head_node_type": FAKE_HEAD,
        **{k: [] for k in ("cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands",
                           "setup_commands", "head_setup_commands", "worker_setup_commands",
                           "head_start_ray_commands", "worker_start_ray_commands")},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


def test_fake_config_mirrors_cluster_yaml():
    cfg = fake_config(Path("cluster.yaml"), "127.0.0.1:1")
    raw = yaml.safe_load(Path("cluster.yaml").read_text())
    workers = set(raw["available_node_types"]) - {raw["head_node_type"]}
    assert set(cfg["available_node_types"]) == workers | {FAKE_HEAD}
    for name in workers:
        assert cfg["available_node_types"][name]["min_workers"] == raw["available_node_types"][name]["min_workers"] == 0
        assert cfg["available_node_types"][name]["resources"][STAND_IN] == raw["available_node_types"][name]["resources"]["GPU"]


def _worker_nodes(cluster) -> list[dict]:
    return [n for n in cluster.nodes_info() if n["Alive"] and STAND_IN in n["Resources"]]


def test_autoscaler_adds_gpu_type_nodes_for_trials_and_removes_them(tmp_path):
    cluster = LocalCluster(own_disks=False)  # its nodes are started by Ray's fake provider, from the head's environment
    try:
        path = tmp_path / "fake.yaml"
        path.write_text(yaml.safe_dump(fake_config(Path("cluster.yaml"), cluster.address)))
        cluster.start_head(num_cpus=0, extra_env={"RAY_FAKE_CLUSTER": "1"}, args=[f"--autoscaling-config={path}"])
        assert _worker_nodes(cluster) == []  # starts with zero GPU-type workers

        exp = write_experiment(tmp_path / "job", tmp_path / "results", name="autoscaled")
        # No --working-dir: the fake provider's nodes share the head's temp dir, where one node's
        # runtime-env cleanup would delete a working dir another node's workers still use.
        # What each node was is recorded while the job runs: an idle node is removed 12 s after
        # its trial ends, and ray.nodes() then lists it without resources.
        with cluster.watch_nodes() as seen:
            proc = cluster.job_submit(None, ["ecg-ray", "tune", str(exp)])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

        hist = pd.read_csv(tmp_path / "results" / "autoscaled" / "report" / "history.csv")
        used = set(hist["node_id"])
        assert used and used <= set(seen), (used, seen)
        assert all(STAND_IN in seen[n] for n in used), seen  # the autoscaled node type

        deadline = time.time() + 180
        while _worker_nodes(cluster) and time.time() < deadline:
            time.sleep(3)
        assert _worker_nodes(cluster) == []  # idle nodes were removed
    finally:
        cluster.stop()
        assert not cluster.processes()
