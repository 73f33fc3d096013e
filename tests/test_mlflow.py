"""MLflow tracking (ecg_ray.results.integrations.tracking): a real `ecg-ray tune --mlflow` run, a real tracking server on
127.0.0.1 (SQLite backend, local artifact root) and a file store, read back with MlflowClient. Skipped
cleanly without the mlflow extra (`pip install -e '.[mlflow]'`; .ci/run installs it)."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")
from mlflow.tracking import MlflowClient  # noqa: E402
from helpers import tiny_experiment  # noqa: E402

from ecg_ray.commands.main import main  # noqa: E402
from ecg_ray.results.integrations.tracking import EXP_DIR, ROLE, TRIAL, LiveRuns, sync  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(mlflow_uri):
    """`mlflow server` on 127.0.0.1 (the session's: tests/conftest.py)."""
    return mlflow_uri


@pytest.fixture(scope="module")
def tuned(ray_local, server, tmp_path_factory):
    """A real run: three trials under ASHA (one stopped early), logged to the server by `ecg-ray tune --mlflow`."""
    work = tmp_path_factory.mktemp("mlflow_run")
    exp = tiny_experiment(work, "tracked", work / "results", search={"lr": [0.003, 0.001, 0.0001], "epochs": 2},
                          scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 3})
    assert main(["tune", str(exp), "--mlflow", server]) == 0
    return work / "results" / "tracked"


def _runs(client: MlflowClient, name: str, folder: Path):
    (experiment,) = [e for e in client.search_experiments() if e.name == name]
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{EXP_DIR}` = '{folder}'")
    parents = [r for r in runs if r.data.tags[ROLE] == "experiment"]
    children = {r.data.tags[TRIAL]: r for r in runs if r.data.tags[ROLE] == "trial"}
    return parents, children


def _check(client: MlflowClient, name: str, folder: Path) -> dict:
    trials = pd.read_csv(folder / "report" / "trials.csv").set_index("trial_id")
    hist = pd.read_csv(folder / "report" / "history.csv")
    (parent,), children = _runs(client, name, folder)
    assert set(children) == set(trials.index)
    for key, run in children.items():
        t = trials.loc[key]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert float(run.data.params["lr"]) == t["lr"] and run.data.params["hidden_size"] == str(t["hidden_size"])
        word = "stopped by ASHA" if t["early_stopped"] else "finished"
        assert run.data.tags["status"] == word and run.info.status == ("KILLED" if t["early_stopped"] else "FINISHED")
        assert run.data.tags["trial_key"] == key and run.data.tags["data_hash"] == t["data_hash"] and run.data.tags["seed"] == "42"
        history = client.get_metric_history(run.info.run_id, "val_macro_f1")
        mine = hist[hist["trial_id"] == key].sort_values("epoch")
        assert sorted(m.step for m in history) == mine["epoch"].tolist()  # every epoch once, step = epoch
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == mine["val_macro_f1"].tolist()
    assert parent.info.status == "FINISHED" and parent.data.params["trials"] == str(len(trials))
    configs = pd.read_csv(folder / "report" / "configs.csv")
    assert parent.data.metrics["best_config_best_val_macro_f1_mean"] == configs["best_val_macro_f1_mean"].iloc[0]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report", "best_model.pt"} <= artifacts
    assert "report/index.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    return {k: r.info.run_id for k, r in children.items()} | {"parent": parent.info.run_id}


def test_a_tune_run_is_one_parent_run_and_a_child_run_per_trial_on_a_real_server(tuned, server):
    trials = pd.read_csv(tuned / "report" / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and len(trials) == 3
    _check(MlflowClient(server), "tracked", tuned)  # each trial's status: finished, or stopped by ASHA
    record = json.loads((tuned / "ecg_ray_experiment.json").read_text())
    assert record["config"]["tracking"]["mlflow_uri"] == server  # a resume logs to the same place


def test_a_second_sync_and_a_resumed_trial_continue_the_same_runs(tuned, server, tmp_path):
    client = MlflowClient(server)
    ids = _check(client, "tracked", tuned)
    assert sync(str(tuned), server) == []  # again: nothing doubles
    assert _check(client, "tracked", tuned) == ids
    # A trial cut back to its first epoch (as before a resume), synced; then whole again: the same run, on from there.
    copy = tmp_path / "tracked"
    shutil.copytree(tuned, copy)
    key = max(ids.keys() - {"parent"})
    (result,) = [p.parent / "result.json" for p in copy.glob("*/params.json") if json.loads(p.read_text()).get("trial_key") == key]
    whole = result.read_text()
    result.write_text(whole.splitlines()[0] + "\n")
    status = json.loads((copy / "trial_status.json").read_text())
    status[key] = {"status": "RUNNING", "last_epoch": 1}
    (copy / "trial_status.json").write_text(json.dumps(status))
    assert main(["report", str(copy), "--mlflow", server, "--mlflow-experiment", "resumed"]) == 0
    _, children = _runs(client, "resumed", copy)
    first = children[key].info.run_id
    assert [m.step for m in client.get_metric_history(first, "val_macro_f1")] == [1] and children[key].info.status == "RUNNING"
    result.write_text(whole)
    (copy / "trial_status.json").write_text((tuned / "trial_status.json").read_text())
    assert main(["report", str(copy), "--mlflow", server, "--mlflow-experiment", "resumed"]) == 0
    resumed = _check(client, "resumed", copy)
    assert resumed[key] == first


def test_a_file_store_holds_the_same_runs(tuned, tmp_path, monkeypatch):
    # MLflow 3 keeps its file store in maintenance mode, behind this switch (a lab's old ./mlruns).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    assert sync(str(tuned), uri, "filed") == []
    _check(MlflowClient(uri), "filed", tuned)


def test_a_server_that_is_down_is_a_warning_naming_it_and_the_report_still_writes(tuned, capsys):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    assert main(["report", str(tuned), "--mlflow", uri]) == 0
    err = capsys.readouterr().err
    (line,) = [l for l in err.splitlines() if l.startswith("ecg-ray: warning: MLflow")]
    assert f"MLflow at {uri} could not be written" in line and f"ecg-ray report {tuned} --mlflow {uri}" in line
    assert time.monotonic() - t0 < 120 and (tuned / "report" / "trials.csv").is_file()


def test_without_the_extra_the_error_names_it_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what Python does for a package that is not installed
    exp = tiny_experiment(tmp_path, "x", tmp_path / "results")
    assert main(["tune", str(exp), "--mlflow", "sqlite:///x.db"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "needs the mlflow extra: pip install -e '.[mlflow]'" in line and not (tmp_path / "results").exists()


def test_epochs_are_logged_live_once_each_and_a_server_that_goes_away_stops_it_with_one_warning(server, capsys):
    live = LiveRuns("/nowhere/live", server, "live")
    for epoch, f1 in ((1, 0.25), (1, 0.25), (2, 0.5)):  # epoch 1 twice, as a resumed trial reports its restored epoch
        live.epoch("t0000", {"lr": 0.001, "hidden_size": 128}, {"epoch": epoch, "val_macro_f1": f1, "val_loss": 1.0})
    client = MlflowClient(server)
    (parent,), children = _runs(client, "live", Path("/nowhere/live"))
    run = children["t0000"]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [(1, 0.25), (2, 0.5)]
    assert run.data.params["lr"] == "0.001" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    gone = LiveRuns("/nowhere/gone", f"http://127.0.0.1:{_free_port()}", "gone")
    for epoch in (1, 2, 3):
        gone.epoch("t0000", {"lr": 0.001}, {"epoch": epoch, "val_macro_f1": 0.1})
    out = capsys.readouterr().out
    assert out.count("stopped answering") == 1 and gone.failed
