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


def _stages() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("ecg_ray_submit_*"))


@pytest.mark.parametrize("link, target", [("ecg_ray/keylink.py", "key"), ("ecg_ray/keys", "keys-folder"),
                                          ("experiments/gone.yaml", "missing")])
def test_a_symlink_out_of_the_project_is_refused_and_nothing_is_staged(project, tmp_path, link, target):
    (tmp_path / "key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET\n")
    (tmp_path / "keys-folder").mkdir()
    (tmp_path / "keys-folder" / "id.py").write_text("SECRET\n")
    (project / link).symlink_to(tmp_path / target)
    before = _stages()
    with pytest.raises(ConfigError, match=f"{link} -> \\S+ points (outside the working dir|nowhere)") as refused:
        stage_upload(str(project), "experiments/quick.yaml")
    assert "SECRET" not in str(refused.value) and _stages() == before


def test_links_to_files_inside_the_project_that_submit_does_not_upload_are_all_refused_by_name(project):
    """`ecg_ray/keylink.py -> ../.ssh/id_rsa` stays in the project, yet reaches a file outside the allow-list:
    refused, with every other such link, and nothing is staged."""
    (project / ".ssh").mkdir(exist_ok=True)
    (project / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET\n")
    (project / ".aws").mkdir(exist_ok=True)
    (project / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = SECRET\n")
    (project / "ecg_ray" / "keylink.py").symlink_to("../.ssh/id_rsa")
    (project / "experiments" / "creds.yaml").symlink_to("../.aws/credentials")
    (project / "ecg_ray" / "dotaws").symlink_to("../.aws")  # a linked folder reaching what is not uploaded
    before = _stages()
    with pytest.raises(ConfigError) as refused:
        stage_upload(str(project), "experiments/quick.yaml")
    message = str(refused.value)
    assert "3 link(s)" in message and "Nothing was uploaded" in message and "SECRET" not in message
    for link, target in [("ecg_ray/keylink.py", ".ssh/id_rsa"), ("experiments/creds.yaml", ".aws/credentials"),
                         ("ecg_ray/dotaws", ".aws/")]:
        assert f"{link} -> " in message and f"points to {target}, which submit does not upload" in message
    assert _stages() == before


def test_a_symlink_inside_the_project_uploads_the_file_it_names(project):
    (project / "ecg_ray" / "alias.py").symlink_to(project / "ecg_ray" / "errors.py")
    (project / "ecg_ray" / "again").symlink_to(project / "ecg_ray" / "data")  # a linked folder: listed at its real place
    stage, _, files = stage_upload(str(project), "experiments/quick.yaml")
    try:
        assert "ecg_ray/alias.py" in files and not (stage / "ecg_ray" / "alias.py").is_symlink()
        assert (stage / "ecg_ray" / "alias.py").read_text() == (project / "ecg_ray" / "errors.py").read_text()
        assert not any(f.startswith("ecg_ray/again/") for f in files) and "ecg_ray/data/trust.py" in files
    finally:
        shutil.rmtree(stage)


@pytest.mark.parametrize("experiment", [".ssh/id_ed25519", "key.yaml", "experiments/bad.yaml"])
def test_the_experiment_file_is_validated_before_anything_is_staged(project, experiment):
    (project / "key.yaml").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA SECRET\n")
    (project / "experiments" / "bad.yaml").write_text("search:\n  lr: [fast]\n")
    before = _stages()
    with pytest.raises(ConfigError) as refused:
        stage_upload(str(project), experiment)
    assert "SECRET" not in str(refused.value) and "b3BlbnNzaC1rZXkt" not in str(refused.value)
    assert _stages() == before


def test_submit_refuses_bad_tune_options_and_an_unreachable_dashboard_in_one_line(capsys):
    from localcluster import free_port

    from ecg_ray.commands.main import main

    before = _stages()
    assert main(["submit", "--no-wait", "experiments/quick.yaml", "--epochs-typo", "3"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "not `ecg-ray tune`'s (--epochs-typo 3: unrecognized arguments: --epochs-typo 3); nothing was uploaded" in line
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["submit", "--no-wait", "--address", address, "experiments/quick.yaml"]) == 2
    err = capsys.readouterr().err
    (line,) = [l for l in err.splitlines() if l.startswith("ecg-ray: error:")]
    assert f"Cannot reach the Ray dashboard at {address}" in line and "nothing was submitted" in line
    assert "Traceback" not in err and _stages() == before
