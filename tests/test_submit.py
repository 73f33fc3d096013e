"""`ecg-ray submit` uploads an allow-list, never the secrets, data or results lying in a project folder."""

import shutil
from pathlib import Path

import pytest

from ecg_ray.errors import ConfigError
from ecg_ray.tuning.submit import stage_upload

ROOT = Path(__file__).resolve().parents[1]

PLANTED = [
    ".env", ".aws/credentials", ".ssh/id_ed25519", "id_rsa", "gcp-key.json", "service-account.json", "notes.txt",
    "train_df.pkl", "data.parquet", "training2017/A00001.mat", "training2017/A00001.hea", "my_cinc/REFERENCE.csv",
    "results/quick/ecg_ray_experiment.json", "ecg_ray_results/quick/trial_status.json", ".git/config",
    "ecg_ray/__pycache__/cli.cpython-311.pyc", "ecg_ray/secrets.env", "experiments/.env", "wandb/run/files.json",
]


@pytest.fixture
def project(tmp_path) -> Path:
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "ecg_ray", proj / "ecg_ray", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "experiments", proj / "experiments")
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    for rel in PLANTED:
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("SECRET\n")
    return proj


def test_only_the_allow_list_is_packed(project):
    stage, rel_exp, files = stage_upload(str(project), "experiments/quick.yaml")
    try:
        packed = {str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()}
        assert packed == set(files)
        expected = {str(p.relative_to(ROOT)) for p in (ROOT / "ecg_ray").rglob("*.py")}
        expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "experiments").glob("*.yaml")} | {"pyproject.toml"}
        assert packed == expected and rel_exp == "experiments/quick.yaml"
        assert not any("SECRET" in (stage / f).read_text() for f in packed)
    finally:
        shutil.rmtree(stage)


def test_include_adds_a_path_and_an_outside_experiment_file_is_packed_by_name(project, tmp_path):
    (project / "configs").mkdir()
    (project / "configs" / "lab.yaml").write_text("name: lab\n")
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("name: elsewhere\n")
    stage, rel_exp, files = stage_upload(str(project), str(outside), include=["configs"])
    try:
        assert rel_exp == "elsewhere.yaml" and (stage / "elsewhere.yaml").read_text() == "name: elsewhere\n"
        assert "configs/lab.yaml" in files and not set(files) & set(PLANTED)
    finally:
        shutil.rmtree(stage)


@pytest.mark.parametrize("include", ["nope", "../elsewhere.yaml"])
def test_include_must_name_something_inside_the_working_dir(project, tmp_path, include):
    (tmp_path / "elsewhere.yaml").write_text("x: 1\n")
    with pytest.raises(ConfigError, match=f"--include {include}: no such file or folder inside the working dir"):
        stage_upload(str(project), "experiments/quick.yaml", include=[include])
