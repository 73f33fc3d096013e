"""k8s/rayjob.yaml and `ecg-ray k8s`: KubeRay RayJob manifests, validated against KubeRay's own RayJob CRD
(../shared/kuberay, skipped cleanly without it) with jsonschema; no cluster needed."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from ecg_ray.commands.k8s import GPU_IMAGE, HEAD_IMAGE, RAY_RELEASE, manifest, runtime_requirements
from ecg_ray.commands.main import main
from ecg_ray.config import load_experiment

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT.parent / "shared" / "kuberay" / "ray.io_rayjobs.yaml"
COMMITTED = ROOT / "k8s" / "rayjob.yaml"
# What k8s/rayjob.yaml was generated with (its header says so too).
COMMITTED_ARGS = ["experiments/seed_grid.yaml", "--storage", "s3://YOUR-BUCKET/ecg_ray_results", "--gpus", "4"]


@pytest.fixture(scope="module")
def rayjob_schema() -> dict:
    if not CRD.is_file():
        pytest.skip("../shared/kuberay/ray.io_rayjobs.yaml is absent (a fresh clone has no ../shared)")
    crd = yaml.safe_load(CRD.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def _validate(doc: dict, schema: dict) -> None:
    jsonschema.Draft7Validator(schema).validate(doc)  # OpenAPI v3's structural schema: Draft 7 keywords


def _generated(*args: str) -> str:
    storage = args[args.index("--storage") + 1] if "--storage" in args else "s3://YOUR-BUCKET/ecg_ray_results"
    gpus = int(args[args.index("--gpus") + 1]) if "--gpus" in args else 4
    return manifest(args[0], storage, gpus, project=ROOT)


@pytest.mark.parametrize("which", ["committed", "generated for quick.yaml"])
def test_the_manifest_is_a_valid_rayjob_for_the_projects_ray(which, rayjob_schema):
    text = COMMITTED.read_text() if which == "committed" else _generated("experiments/quick.yaml", "--gpus", "2", "--storage", "gs://lab/results")
    doc = yaml.safe_load(text)
    _validate(doc, rayjob_schema)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    cluster = spec["rayClusterSpec"]
    # The Ray release: the image's, the fast path's, one pyproject.toml accepts.
    from ecg_ray.tuning.fast_path import TESTED_RAY

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [Requirement(d) for d in deps if d.startswith("ray[")]
    assert cluster["rayVersion"] == RAY_RELEASE == TESTED_RAY[-1] and ray_dep.specifier.contains(RAY_RELEASE)
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no trial on the head
    assert head["template"]["spec"]["containers"][0]["image"] == HEAD_IMAGE and RAY_RELEASE in HEAD_IMAGE
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0 and gpu["maxReplicas"] >= 1 and cluster["enableInTreeAutoscaling"]
    worker = gpu["template"]["spec"]["containers"][0]
    assert worker["image"] == GPU_IMAGE and GPU_IMAGE.endswith("-gpu") and worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    # The runtime environment brings ecg_ray (the working_dir) and pyproject.toml's dependencies but Ray.
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["working_dir"].endswith(".zip") and env["pip"] == runtime_requirements()
    assert {Requirement(r).name for r in env["pip"]} == {Requirement(d).name for d in deps} - {"ray"}
    # The entrypoint: ecg-ray tune on a valid experiment file, on GPUs, to a bucket.
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "ecg_ray", "tune"] and "--gpu" in argv
    storage = argv[argv.index("--storage") + 1]
    assert storage.startswith(("s3://", "gs://"))
    load_experiment(ROOT / argv[4], storage_path=storage)
    assert "CHANGE" in text and text.count("CHANGE") >= 6


def test_the_committed_manifest_is_what_the_command_prints(capsys):
    assert main(["k8s", *COMMITTED_ARGS]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text(), "regenerate: ecg-ray k8s " + " ".join(COMMITTED_ARGS) + " --out k8s/rayjob.yaml"


def test_a_planted_mistake_fails_the_schema(rayjob_schema):
    doc = yaml.safe_load(COMMITTED.read_text())
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        _validate(doc, rayjob_schema)
    doc = yaml.safe_load(COMMITTED.read_text())
    del doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        _validate(doc, rayjob_schema)


@pytest.mark.parametrize("argv, message", [
    (["k8s", "experiments/seed_grid.yaml", "--storage", "/home/me/results"], "results must go to object storage"),
    (["k8s", "experiments/seed_grid.yaml", "--gpus", "0"], "'--gpus' parameter must be"),
    (["k8s", "/etc/hostname"], "is outside the project folder"),
    (["k8s", "experiments/nope.yaml"], "does not exist"),
], ids=["local storage", "no GPU", "outside the project", "no such file"])
def test_bad_input_is_refused_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and message in err


def test_a_bad_experiment_file_is_refused_before_any_manifest(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "bad.yaml").write_text("search:\n  lr: [fast]\n")
    assert main(["k8s", "experiments/bad.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "bad.yaml: The 'lr' parameter must be a float" in err


HOSTILE = ["s3://b/x; rm -rf / #", "s3://b/x\nfoo: bar", "s3://b/x\r\nkind: Pod", "not a uri", "s3://b/x' #",
           "s3://b/../x", "file:///tmp/x", "s3://b/x: y", "s3://b/{x}", "s3://b/x`id`", "s3://b/$(id)", "s3:// b/x"]


@pytest.mark.parametrize("option", ["--storage", "--source", "--name"])
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_value_is_refused_in_one_line_and_nothing_is_printed(option, value, capsys):
    value = value + ".zip" if option == "--source" else value
    assert main(["k8s", "experiments/quick.yaml", option, value]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and option in err and repr(value) in err


def _printed(capsys, *args: str) -> str:
    assert main(["k8s", "experiments/quick.yaml", *args]) == 0
    return capsys.readouterr().out


def test_any_value_gives_one_document_with_that_value_or_a_refusal(capsys, request):
    """Random values over an alphabet of YAML's and the shell's special characters: each is refused, or the
    output is one YAML document (valid against the CRD where ../shared has it) that carries it exactly."""
    import random

    schema = request.getfixturevalue("rayjob_schema") if CRD.is_file() else None
    rng = random.Random(42)
    alphabet = "ab9._~=+@,%/-" * 4 + ":#;'\"`$ {}[]|>&*!?\n\t\\"  # plain characters more often, so some pass
    accepted = 0
    for _ in range(150):
        path = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        storage, source = f"s3://lab/{path}", f"https://example.org/{path}.zip"
        code = main(["k8s", "experiments/quick.yaml", "--storage", storage, "--source", source])
        out, err = capsys.readouterr()
        if code != 0:
            assert code == 2 and out == "" and len(err.splitlines()) == 1
            continue
        accepted += 1
        (doc,) = list(yaml.safe_load_all(out))
        if schema:
            _validate(doc, schema)
        argv = shlex.split(doc["spec"]["entrypoint"])
        assert argv[argv.index("--storage") + 1] == storage and len(argv) == 8
        assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["working_dir"] == source
    assert accepted >= 10  # the plain values among them went through


def test_odd_but_valid_values_are_kept_exactly(capsys):
    storage, source = "s3://my.bucket/a=b+c@d,e%20f~g/x-y_z", "gs://lab-src/rel/v1.2/ecg_ray-src.zip"
    doc = yaml.safe_load(_printed(capsys, "--storage", storage, "--source", source, "--name", "lab-1"))
    assert doc["metadata"]["name"] == "lab-1"
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[-2:] == ["--storage", storage]
    assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"]) == {"working_dir": source, "pip": runtime_requirements()}
