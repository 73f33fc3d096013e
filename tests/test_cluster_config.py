"""cluster.yaml against the schema Ray's cluster launcher uses (offline: no cloud call)."""

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path("cluster.yaml")


@pytest.fixture
def raw():
    return yaml.safe_load(CLUSTER.read_text())


def _validate(cfg):
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_is_valid_for_the_launcher(raw):
    _validate(raw)


@pytest.mark.parametrize(
    "plant",
    [
        lambda c: c["available_node_types"]["gpu_worker"].__setitem__("max_worker", 4),  # typo'd key
        lambda c: c.__setitem__("idle_timout_minutes", 5),
        lambda c: c["available_node_types"]["gpu_worker"].__setitem__("resources", {"CPU": 4, "GPU": "one"}),
        lambda c: c["provider"].pop("type"),
    ],
)
def test_a_planted_typo_fails(raw, plant):
    plant(raw)
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError)):
        _validate(raw)


def test_ray_release_pinned_like_pyproject():
    deps = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [d for d in deps if d.startswith("ray[")]
    version = ray_dep.split("==")[1]
    pins = set(re.findall(r"ray\[[a-z,]+\]==([0-9.]+)", CLUSTER.read_text()))
    assert pins == {version}


def test_head_runs_no_trials_and_gpu_workers_autoscale_from_zero(raw):
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    assert any("--num-cpus=0" in c for c in raw["head_start_ray_commands"])
    workers = [t for name, t in raw["available_node_types"].items() if name != raw["head_node_type"]]
    assert len(workers) == 1 and workers[0]["min_workers"] == 0 and workers[0]["resources"]["GPU"] == 1
    assert workers[0]["max_workers"] <= raw["max_workers"]


def test_dashboard_private_and_no_credentials(raw):
    text = CLUSTER.read_text()
    assert "--dashboard-host=127.0.0.1" in text and "0.0.0.0" not in text
    assert not re.search(r"(?i)aws_(secret_)?access_key|AKIA[0-9A-Z]{16}|ssh_private_key:", text)
    assert any("-e ~/ecg_ray" in c for c in raw["setup_commands"])
    assert raw["file_mounts"]["~/ecg_ray"] == "."
