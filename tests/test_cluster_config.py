"""cluster.yaml (AWS) and cluster-onprem.yaml (fixed hosts over SSH) against the schema Ray's
cluster launcher uses (offline: no cloud call, no SSH)."""

import copy
import re
import tomllib
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path("cluster.yaml")
ONPREM = Path("cluster-onprem.yaml")
FILES = [CLUSTER, ONPREM]


def _raw(path):
    return yaml.safe_load(path.read_text())


@pytest.fixture
def raw():
    return _raw(CLUSTER)


def _validate(cfg):
    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.mark.parametrize("path", FILES, ids=str)
def test_cluster_file_is_valid_for_the_launcher(path):
    _validate(_raw(path))


TYPOS = {
    CLUSTER: [
        lambda c: c["available_node_types"]["gpu_worker"].__setitem__("max_worker", 4),  # typo'd key
        lambda c: c.__setitem__("idle_timout_minutes", 5),
        lambda c: c["available_node_types"]["gpu_worker"].__setitem__("resources", {"CPU": 4, "GPU": "one"}),
        lambda c: c["provider"].pop("type"),
    ],
    ONPREM: [
        lambda c: c.__setitem__("idle_timout_minutes", 5),
        lambda c: c["auth"].__setitem__("ssh_usr", "ecgray"),
        lambda c: c.__setitem__("setup_command", c.pop("setup_commands")),
        lambda c: c["provider"].pop("head_ip"),  # the local provider refuses to guess the head
    ],
}


@pytest.mark.parametrize("path, plant", [(p, f) for p in FILES for f in TYPOS[p]],
                         ids=[f"{p}-{i}" for p in FILES for i in range(len(TYPOS[p]))])
def test_a_planted_typo_fails(path, plant):
    raw = _raw(path)
    plant(raw)
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError, click.ClickException)):
        _validate(raw)


@pytest.mark.parametrize("path", FILES, ids=str)
def test_ray_release_pinned_in_pyprojects_range_at_the_fast_paths_release(path):
    """A cluster file pins one Ray release (client and cluster must match): one pyproject.toml accepts,
    the newest the fast path is tested with."""
    from packaging.requirements import Requirement

    from ecg_ray.tuning.fast_path import TESTED_RAY

    deps = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [Requirement(d) for d in deps if d.startswith("ray[")]
    pins = set(re.findall(r"ray\[[a-z,]+\]==([0-9.]+)", path.read_text()))
    assert pins == {TESTED_RAY[-1]} and ray_dep.specifier.contains(TESTED_RAY[-1])


def test_head_runs_no_trials_and_gpu_workers_autoscale_from_zero(raw):
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    assert any("--num-cpus=0" in c for c in raw["head_start_ray_commands"])
    workers = [t for name, t in raw["available_node_types"].items() if name != raw["head_node_type"]]
    assert len(workers) == 1 and workers[0]["min_workers"] == 0 and workers[0]["resources"]["GPU"] == 1
    assert workers[0]["max_workers"] <= raw["max_workers"]


def test_onprem_head_runs_no_trials_and_workers_declare_their_gpus():
    raw = _raw(ONPREM)
    assert raw["provider"]["type"] == "local" and raw["provider"]["head_ip"] and raw["provider"]["worker_ips"]
    assert any("ray start --head" in c and "--num-cpus=0" in c for c in raw["head_start_ray_commands"])
    assert any("ray start --address=" in c and "--num-gpus=" in c for c in raw["worker_start_ray_commands"])


@pytest.mark.parametrize("path", FILES, ids=str)
def test_dashboard_private_and_no_credentials(path):
    raw, text = _raw(path), path.read_text()
    assert "--dashboard-host=127.0.0.1" in text and "0.0.0.0" not in text
    assert not re.search(r"(?i)aws_(secret_)?access_key|AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY|password:", text)
    # A key is named by its path on the user's machine (on-prem), never pasted in.
    assert path == ONPREM or "ssh_private_key:" not in text
    assert raw["auth"].get("ssh_private_key", "~/").startswith("~/")
    assert any("-e ~/ecg_ray" in c for c in raw["setup_commands"])
    assert raw["file_mounts"]["~/ecg_ray"] == "."


def test_onprem_commands_never_stop_every_ray_on_a_host():
    raw = _raw(ONPREM)
    commands = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"] + raw["setup_commands"]
    assert not any(re.search(r"(?<![\w-])ray stop(?![\w-])", c) for c in commands)
    for start in (raw["head_start_ray_commands"], raw["worker_start_ray_commands"]):
        temp = re.search(r"--temp-dir=(\S+)", start[-1]).group(1)
        assert start[0] == f"ecg-ray stop-node --temp-dir {temp}"  # the same instance it then starts
