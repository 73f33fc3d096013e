"""`ecg-ray report DIR --optuna-storage URL`: any experiment folder as an Optuna study, read back with
optuna.load_study, and served by optuna-dashboard on 127.0.0.1 where that package is installed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest
from helpers import fake_trial

from ecg_ray.commands.main import main

State = optuna.trial.TrialState


def _folder(tmp_path, search: dict):
    """Three trials of 4 epochs in Tune's layout: one finished, one stopped by ASHA after 2, one failed after 1."""
    exp = tmp_path / "exp"
    fake_trial(exp, "t0000", 0.001, [0.2, 0.5, 0.4, 0.45])
    fake_trial(exp, "t0001", 0.0005, [0.1, 0.3])
    fake_trial(exp, "t0002", 0.003, [0.05])
    statuses = {"t0000": {"status": "TERMINATED", "last_epoch": 4}, "t0001": {"status": "TERMINATED", "last_epoch": 2},
                "t0002": {"status": "ERROR", "last_epoch": 1}}
    (exp / "trial_status.json").write_text(json.dumps(statuses))
    config = {"name": "studied", "search": search, "scheduler": {"name": "asha"}}
    (exp / "ecg_ray_experiment.json").write_text(json.dumps({"config": config, "data_hash": "abc"}))
    return exp


def test_every_trial_becomes_an_optuna_trial_with_its_state_and_epochs(tmp_path, capsys):
    exp = _folder(tmp_path, {"lr": [0.001, 0.0005, 0.003], "optimizer": "adam", "epochs": 4})
    url = f"sqlite:///{tmp_path}/studies.db"
    for _ in range(2):  # the second write replaces the study
        assert main(["report", str(exp), "--optuna-storage", url]) == 0
    assert "Optuna study 'studied' (3 trials)" in capsys.readouterr().out
    study = optuna.load_study(study_name="studied", storage=url)
    assert len(optuna.get_all_study_names(url)) == 1 and study.direction == optuna.study.StudyDirection.MAXIMIZE
    by_key = {t.user_attrs["trial_key"]: t for t in study.get_trials(deepcopy=False)}
    assert [by_key[k].state for k in ("t0000", "t0001", "t0002")] == [State.COMPLETE, State.PRUNED, State.FAIL]
    done = by_key["t0000"]
    assert done.value == 0.5 and done.intermediate_values == {1: 0.2, 2: 0.5, 3: 0.4, 4: 0.45}
    assert by_key["t0001"].intermediate_values == {1: 0.1, 2: 0.3} and by_key["t0001"].value is None
    assert done.params == {"lr": 0.001} and isinstance(done.distributions["lr"], optuna.distributions.CategoricalDistribution)
    assert done.user_attrs["seed"] == 42 and study.best_trial.user_attrs["trial_key"] == "t0000"
    assert study.user_attrs["search_algorithm"] == "grid" and study.user_attrs["experiment_dir"] == str(exp)


def test_a_random_search_keeps_its_distributions(tmp_path):
    exp = _folder(tmp_path, {"algorithm": "random", "num_samples": 3, "lr": {"loguniform": [1e-4, 1e-2]}})
    url = f"sqlite:///{tmp_path}/studies.db"
    assert main(["report", str(exp), "--optuna-storage", url, "--optuna-study", "random"]) == 0
    trial = optuna.load_study(study_name="random", storage=url).get_trials()[0]
    assert trial.distributions["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)


def test_a_storage_optuna_cannot_open_is_one_line(tmp_path, capsys):
    exp = _folder(tmp_path, {"lr": [0.001, 0.0005, 0.003]})
    assert main(["report", str(exp), "--optuna-storage", "nosuchdb://x"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--optuna-storage nosuchdb://x: Optuna cannot open it" in line


@pytest.mark.server
def test_optuna_dashboard_serves_the_study(tmp_path):
    dashboard = shutil.which("optuna-dashboard")
    if dashboard is None:
        pytest.skip("optuna-dashboard is not installed (pip install optuna-dashboard)")
    exp = _folder(tmp_path, {"lr": [0.001, 0.0005, 0.003]})
    url = f"sqlite:///{tmp_path}/studies.db"
    assert main(["report", str(exp), "--optuna-storage", url]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([dashboard, url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("optuna-dashboard did not answer on 127.0.0.1")
                time.sleep(0.3)
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "studied"
        detail = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10).read())
        assert len(detail["trials"]) == 3
    finally:
        proc.terminate()
        proc.wait(30)


def test_another_study_of_that_name_is_refused_before_anything_is_written(tmp_path, capsys):
    """A hand-made study and another experiment's study of the same name: refused (named with its trial count),
    no report written, the study untouched; --optuna-study writes beside it and --optuna-replace replaces it."""
    exp = _folder(tmp_path, {"lr": [0.001, 0.0005, 0.003]})
    other = _folder(tmp_path / "other", {"lr": [0.001, 0.0005, 0.003]})
    url = f"sqlite:///{tmp_path}/studies.db"
    mine = optuna.create_study(study_name="studied", storage=url)
    mine.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert main(["report", str(exp), "--optuna-storage", url]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "a study 'studied' with 2 trial(s) is already there (not written by ecg_ray" in line and "--optuna-replace" in line
    assert not (exp / "report").exists() and len(optuna.load_study(study_name="studied", storage=url).trials) == 2

    assert main(["report", str(exp), "--optuna-storage", url, "--optuna-study", "studied-ecg"]) == 0
    assert main(["report", str(other), "--optuna-storage", url, "--optuna-study", "studied-ecg"]) == 2
    assert f"(the experiment in {exp})" in capsys.readouterr().err
    assert main(["report", str(exp), "--optuna-storage", url, "--optuna-study", "studied-ecg"]) == 0  # its own: replaced

    assert main(["report", str(exp), "--optuna-storage", url, "--optuna-replace"]) == 0
    study = optuna.load_study(study_name="studied", storage=url)
    assert len(study.trials) == 3 and study.user_attrs["ecg_ray_experiment"] == str(exp)
    assert sorted(optuna.get_all_study_names(url)) == ["studied", "studied-ecg"]


def test_a_read_only_sqlite_file_is_one_line_with_the_fix(tmp_path, capsys):
    import os

    exp = _folder(tmp_path, {"lr": [0.001, 0.0005, 0.003]})
    db = tmp_path / "ro" / "studies.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="elsewhere", storage=url)
    db.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        code = main(["report", str(exp), "--optuna-storage", url])
        err = capsys.readouterr().err
        if os.geteuid() == 0:  # root writes anyway: then it must have worked
            assert code == 0, err
        else:
            (line,) = err.splitlines()
            assert code == 2 and "is not writable" in line and not (exp / "report").exists()
    finally:
        db.parent.chmod(0o755)
