"""The experiment folder type, on a local path and on a file:// URI (the bucket code path without a cloud)."""

import json
import os
from pathlib import Path

import pytest

from ecg_ray.results.store import folder as expdir
from ecg_ray.config import experiment_from_dict
from ecg_ray.errors import ConfigError
from ecg_ray.results.store.folder import ExperimentDir


@pytest.fixture(params=["local", "uri"])
def exp(request, tmp_path) -> ExperimentDir:
    root = tmp_path / "results"
    text = str(root / "e1") if request.param == "local" else f"file://{root}/e1/"
    return ExperimentDir.parse(text)


def _local(exp: ExperimentDir) -> Path:
    return Path(exp.path.removeprefix("file://"))


def test_parse_expands_local_paths_and_keeps_uris(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    local = ExperimentDir.parse("~/results/quick/")
    assert local.path == str(tmp_path / "results" / "quick") and not local.is_uri
    assert (local.storage_root, local.name) == (str(tmp_path / "results"), "quick")
    uri = ExperimentDir.parse("s3://bucket/prefix/quick/")
    assert uri.path == "s3://bucket/prefix/quick" and uri.is_uri
    assert (uri.storage_root, uri.name) == ("s3://bucket/prefix", "quick")
    assert uri.status_file == "s3://bucket/prefix/quick/trial_status.json"


def test_the_config_names_its_folder_through_the_type():
    cfg = experiment_from_dict({"storage_path": "s3://bucket/results/", "name": "e"})
    assert ExperimentDir.for_config(cfg) == ExperimentDir("s3://bucket/results/e")
    assert ExperimentDir.for_config(cfg).train_runs == "s3://bucket/results/e/train_runs"


def test_every_file_of_the_layout_is_named_once(exp):
    names = {
        exp.experiment_file: expdir.EXPERIMENT_FILE, exp.splits_file: expdir.SPLITS_FILE,
        exp.status_file: expdir.STATUS_FILE, exp.progress_file: expdir.PROGRESS_FILE,
        exp.train_runs: expdir.TRAIN_RUNS, exp.report_dir: expdir.REPORT_DIR,
    }
    for path, name in names.items():
        assert path == exp.path + "/" + name


def test_record_round_trip_and_config_follows_the_folder(exp):
    assert not exp.exists()
    with pytest.raises(ConfigError, match="not an ecg_ray experiment folder"):
        exp.read_record()
    cfg = experiment_from_dict({"name": "old-name", "storage_path": "/somewhere/else", "search": {"lr": [0.1, 0.2]}})
    exp.write_record({"config": cfg.to_dict(), "data_hash": "abc"}, {"data_hash": "abc", "ids": {"train": ["r1"]}})
    assert exp.exists()
    assert exp.read_record()["data_hash"] == "abc"
    assert json.loads((_local(exp) / "data_splits.json").read_text())["ids"] == {"train": ["r1"]}
    back = exp.read_config()
    assert ExperimentDir.for_config(back) == exp  # a moved folder is the source of truth for where results go
    assert back.grid() == cfg.grid()
    assert exp.scheduler_name() == "asha"


def test_statuses_merge_and_progress_appends_locally(exp):
    assert exp.read_statuses() == {}
    exp.update_statuses({"t1": {"status": "TERMINATED", "last_epoch": 4}})
    exp.update_statuses({"t2": {"status": "ERROR", "last_epoch": 1}})
    assert set(exp.read_statuses()) == {"t1", "t2"}
    exp.update_statuses({"t2": {"status": "TERMINATED", "last_epoch": 4}})
    assert exp.read_statuses()["t2"]["status"] == "TERMINATED"
    exp.append_progress({"trial_id": "t1", "epoch": 1})
    exp.append_progress({"trial_id": "t1", "epoch": 2})
    progress = _local(exp) / "progress.jsonl"
    if exp.is_uri:
        assert not progress.exists()  # an object store has no append; Tune's result.json is the record
    else:
        assert [json.loads(l)["epoch"] for l in progress.read_text().splitlines()] == [1, 2]


def test_a_loaded_state_reads_records_and_trial_files_once_never_checkpoints_or_tables(exp):
    from ecg_ray import storage
    from ecg_ray.results.store.state import FolderState

    root = _local(exp)
    for rel in ("t_a/params.json", "t_a/result.json", "train_runs/t_a/checkpoint_0/trial_state.pt", "report/trials.csv",
                "trial_status.json", "experiment_state-x.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}\n")
    storage.READS.clear()
    state = FolderState.load(exp)
    assert sorted(storage.READS) == sorted(exp.join(rel) for rel in ("t_a/params.json", "t_a/result.json", "trial_status.json"))
    assert [t.folder for t in state.trials()] == ["t_a"] and state.read_statuses() == {}
    state.update_statuses({"t_a": {"status": "TERMINATED"}})  # written through, answered from memory
    assert state.read_statuses() == {"t_a": {"status": "TERMINATED"}} and set(storage.READS.values()) == {1}
    assert ExperimentDir(exp.path).read_statuses() == {"t_a": {"status": "TERMINATED"}}  # in storage too


def test_a_state_ships_to_ray_as_the_plain_folder(exp):
    import pickle

    from ecg_ray.results.store.state import FolderState

    exp.update_statuses({"t1": {"status": "TERMINATED"}})
    shipped = pickle.loads(pickle.dumps(FolderState.load(exp)))
    assert type(shipped) is ExperimentDir and shipped.path == exp.path


def test_trials_reads_whole_lines_only(tmp_path):
    exp = ExperimentDir.parse(tmp_path / "e")
    folder = tmp_path / "e" / "trial_b"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text('{"lr": 0.1}')
    (folder / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "val_ma')
    (trial,) = exp.trials()
    assert trial.params == {"lr": 0.1} and [(n, r["epoch"]) for n, r in trial.results] == [(1, 1), (2, 2)]
    assert trial.damaged == (f"{folder / 'result.json'}, line 3: cut off or not JSON ('{{\"epoch\": 3, \"val_ma'); that line was skipped",)


def test_copy_to_puts_files_into_a_uri_folder(tmp_path):
    from ecg_ray import storage

    table = tmp_path / "trials.csv"
    table.write_text("a,b\n1,2\n")
    assert storage.copy_to([str(table)], f"file://{tmp_path}/e/report") == [f"file://{tmp_path}/e/report/trials.csv"]
    assert (tmp_path / "e" / "report" / "trials.csv").read_text() == "a,b\n1,2\n"


def test_remove_deletes_the_folder(exp):
    exp.update_statuses({"t1": {"status": "TERMINATED"}})
    assert _local(exp).is_dir()
    exp.remove()
    assert not _local(exp).exists()


def _hold_lock(exp: ExperimentDir):
    import subprocess
    import sys

    code = ("import sys, time\nfrom ecg_ray.results.store.folder import ExperimentDir\n"
            f"lock = ExperimentDir({exp.path!r}).lock()\nlock.__enter__()\nprint('held', flush=True)\ntime.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_tune_on_a_held_folder_exits_at_once_naming_the_holder(tmp_path, capsys):
    import signal

    from ecg_ray.commands.main import main

    exp = ExperimentDir.parse(tmp_path / "results" / "quick")
    holder = _hold_lock(exp)
    try:
        assert main(["tune", "experiments/quick.yaml", "--storage", str(tmp_path / "results")]) == 2
        err = capsys.readouterr().err
        assert f"{exp.path} is in use by another `ecg-ray tune` (pid {holder.pid} on " in err and exp.lock_file in err
        assert not Path(exp.path).exists()  # refused before anything was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exp.lock():  # the killed holder's lock is stale: taken over, and said so
        assert f"pid {holder.pid}" in capsys.readouterr().out
    with exp.lock():  # released cleanly: nothing stale to mention
        assert "taken over" not in capsys.readouterr().out


def test_one_process_cannot_take_the_same_lock_twice(tmp_path):
    exp = ExperimentDir.parse(tmp_path / "e")
    with exp.lock():
        with pytest.raises(ConfigError, match="is in use by another"):
            with exp.lock():
                pass


def test_a_bucket_folder_is_locked_on_this_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("ECG_RAY_CACHE", str(tmp_path / "cache"))
    exp = ExperimentDir.parse("s3://bucket/results/quick")
    assert exp.lock_file.startswith(str(tmp_path / "cache" / "locks"))
    with exp.lock():
        assert os.path.isfile(exp.lock_file)
