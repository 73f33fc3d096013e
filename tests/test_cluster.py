"""A real multi-node local cluster (`ray start`) runs the quick grid submitted with `ray job submit`.

As on AWS or KubeRay, the nodes share no disk (each has its own temp dir, HOME and TMPDIR) and the
experiment's results live in a bucket (the session's S3 server) where one runs, else in a folder."""

from pathlib import Path

import pytest
import yaml

from ecg_ray import storage
from helpers import read_json, read_table
from localcluster import LocalCluster

pytestmark = pytest.mark.cluster


def write_experiment(folder: Path, storage_path: str, **changes) -> Path:
    """experiments/quick.yaml, with trials pinned to the stand-in GPU node type and the given changes."""
    exp = yaml.safe_load(Path("experiments/quick.yaml").read_text())
    exp["storage_path"] = str(storage_path)
    exp.setdefault("resources", {})["custom_resources_per_worker"] = {"gpu_node": 1}
    for dotted, value in changes.items():
        node = exp
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cluster_quick.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


@pytest.fixture(scope="module")
def cluster(s3_server):  # after the S3 server: the nodes hold the bucket's settings
    c = LocalCluster()
    try:
        # Like cluster.yaml: a head with no CPUs (runs no trial) and GPU-type worker nodes,
        # here with a custom resource standing in for the GPU.
        c.start_head(num_cpus=0)
        c.add_node("w1", 2, {"gpu_node": 1})
        c.add_node("w2", 2, {"gpu_node": 1})
        yield c
    finally:
        c.stop()
        assert not c.processes()


@pytest.fixture(scope="module")
def submitted(cluster, s3_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("job")
    results = s3_server.uri("cluster") if s3_server else str(tmp_path_factory.mktemp("results"))
    write_experiment(work, results, name="quick")
    proc = cluster.job_submit(str(work), ["ecg-ray", "tune", "cluster_quick.yaml"])
    return proc, storage.join(results, "quick")


def test_job_succeeds(submitted):
    proc, _ = submitted
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    assert "Ranked by best validation macro-F1" in proc.stdout


def test_trials_ran_on_both_worker_nodes_never_the_head(submitted, cluster):
    _, exp = submitted
    hist = read_table(storage.join(exp, "report", "history.csv"))
    nodes = {n["NodeID"]: n for n in cluster.nodes_info()}
    used = set(hist["node_id"])
    assert len(used) == 2
    assert all(nodes[n]["Resources"].get("gpu_node") == 1 for n in used)  # the worker node type
    assert not any("node:__internal_head__" in nodes[n]["Resources"] for n in used)


def test_exported_tables_are_complete(submitted):
    _, exp = submitted
    trials = read_table(storage.join(exp, "report", "trials.csv"))
    assert len(trials) == 2 and trials["best_val_macro_f1"].is_monotonic_decreasing
    assert trials["data_hash"].nunique() == 1
    assert trials["data_hash"].iloc[0] == read_json(storage.join(exp, "ecg_ray_experiment.json"))["data_hash"]
    written = storage.files(storage.join(exp, "report"))
    for name in ("trials", "history"):
        for ext in ("csv", "md", "json"):
            assert written[f"{name}.{ext}"] > 0
