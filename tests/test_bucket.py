"""A lab's whole workflow with its results in a bucket: a real S3-compatible server on 127.0.0.1
(SeaweedFS, tests/s3server.py), reached the standard way (AWS_ENDPOINT_URL and keys), as on a cluster.

One experiment, grouped ASHA over two seeds with a held-out test split, runs twice: in a local
folder, uninterrupted, and in the bucket, where its driver is SIGKILLed once a trial has finished
and `ecg-ray tune --resume s3://...` finishes it. Its tables must equal the local run's cell for
cell (timing columns aside); then every command that takes a folder or a model runs on the bucket:
report, predict, rerun, compare, repeat and the MLflow sync. Each command's reads of the folder are
logged by the storage layer (ECG_RAY_READ_LOG) and held to one per file.
(Folds and --extend on the bucket: tests/test_folds.py and tests/test_extend.py run there.)
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ecg_ray import storage
from ecg_ray.commands.main import main
from ecg_ray.results.report import build_report
from ecg_ray.results.tables.ranking import comparable
from ecg_ray.schema import EPOCH_COLUMNS, RUN_COLUMNS, confusion_columns
from faults import Driver, wait_for
from helpers import read_json, read_table, tiny_experiment

pytestmark = [pytest.mark.ray, pytest.mark.s3]

ROOT = Path(__file__).resolve().parents[1]


def lab_experiment(folder: Path, storage_path: str) -> Path:
    """Two configs x two seeds, 2 epochs, grouped ASHA (rungs at epoch 1), a test split; trials in
    turn, so a kill after the first trial leaves the rest to the resume."""
    folder.mkdir(parents=True, exist_ok=True)
    path = tiny_experiment(folder, "lab", storage_path, search={"lr": [0.001, 0.0005], "epochs": 2},
                           scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
                           data={"n_records": 160, "test_fraction": 0.2, "cache_dir": str(folder / "cache")},
                           resources={"max_concurrent_trials": 1})
    raw = yaml.safe_load(path.read_text()) | {"repeats": 2}
    path.write_text(yaml.safe_dump(raw))
    return path


def reads(log: Path, pid: int) -> collections.Counter:
    """What one process read through the storage layer, per location."""
    lines = log.read_text().splitlines() if log.is_file() else []
    return collections.Counter(loc for p, _, loc in (line.partition("\t") for line in lines) if p == str(pid))


def ecg_ray(args: list[str], log: Path, reads_log: Path | None = None) -> tuple[int, int]:
    """`ecg-ray ARGS` in a subprocess (its own local Ray where it needs one): (exit status, pid)."""
    env = {**os.environ, **({storage.READ_LOG_ENV: str(reads_log)} if reads_log else {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ecg_ray.commands.main", *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        return proc.wait(900), proc.pid


def tables(folder: str) -> dict[str, pd.DataFrame]:
    """The ranked trials and the history (from the folder's records), the configs and test tables (as
    exported), without the columns that say where and when things ran."""
    ranked, history = build_report(folder)
    report = storage.join(folder, "report")
    measured = (*RUN_COLUMNS, "time")  # where and when it ran, how long, how much memory: not the results
    timing = [c for c in read_table(storage.join(report, "configs.csv")).columns if any(k in c for k in measured)]
    return {
        "trials": comparable(ranked),
        "history": history[["trial_id", *EPOCH_COLUMNS, *confusion_columns()]].reset_index(drop=True),
        "configs": read_table(storage.join(report, "configs.csv")).drop(columns=timing),
        "test": comparable(read_table(storage.join(report, "test.csv"))),
    }


@pytest.fixture(scope="module")
def lab(s3, tmp_path_factory):
    """(local folder, bucket folder, work dir, {command: (reads log, pid)}) of the lab experiment."""
    work = tmp_path_factory.mktemp("lab")
    local_file = lab_experiment(work / "local", str(work / "results"))
    bucket_file = lab_experiment(work / "bucket", s3.uri("lab"))
    bucket = s3.uri("lab", "lab")
    logged = {}

    rc, pid = ecg_ray(["tune", str(local_file), "--num-cpus", "2"], work / "local.log", work / "reads_local.log")
    assert rc == 0, (work / "local.log").read_text()[-3000:]
    logged["tune"] = (work / "reads_local.log", pid)
    # A resume of the finished folder: nothing to run, every record, trial file and kept best epoch read again, once.
    rc, pid = ecg_ray(["tune", "--resume", str(work / "results" / "lab")], work / "local.log", work / "reads_local_resume.log")
    assert rc == 0, (work / "local.log").read_text()[-3000:]
    logged["tune --resume (local, finished)"] = (work / "reads_local_resume.log", pid)

    def a_trial_finished():
        statuses = storage.read_optional(storage.join(bucket, "trial_status.json"))
        return statuses and b'"TERMINATED"' in statuses

    driver = Driver([str(bucket_file)], work / "bucket.log")
    wait_for(a_trial_finished, driver, timeout=600, what="a finished trial in the bucket")
    os.kill(driver.proc.pid, signal.SIGKILL)  # a preempted head: no clean-up, no last write
    driver.wait()
    ended = [s["status"] for s in read_json(storage.join(bucket, "trial_status.json")).values()]
    assert 1 <= ended.count("TERMINATED") < 4, ended  # killed mid-experiment

    rc, pid = ecg_ray(["tune", "--resume", bucket, "--num-cpus", "2"], work / "resume.log", work / "reads_resume.log")
    assert rc == 0, (work / "resume.log").read_text()[-3000:]
    logged["tune --resume"] = (work / "reads_resume.log", pid)
    return str(work / "results" / "lab"), bucket, work, logged


def test_a_killed_and_resumed_run_in_the_bucket_equals_the_same_run_in_a_local_folder(lab):
    local, bucket, work, _ = lab
    resumed = (work / "resume.log").read_text()
    assert "Ranked by best validation macro-F1" in resumed and "Traceback" not in resumed
    here, there = tables(local), tables(bucket)
    for name in here:
        pd.testing.assert_frame_equal(here[name], there[name], check_like=False, obj=name)
    assert len(there["trials"]) == 4 and set(there["test"]["evaluated"]) >= {"best trial", "ensemble of 2"}
    written = storage.files(storage.join(bucket, "report"))
    assert {"trials.csv", "configs.csv", "test.csv", "history.csv", "index.html"} <= set(written)
    assert storage.is_file(storage.join(bucket, "best_model.pt")) and storage.is_file(storage.join(bucket, "best_trial_model.pt"))


def test_each_command_reads_each_file_of_the_folder_once(lab):
    """The read budget: the driver of a default run and of a resume reads each file of the folder at
    most once (its records, Tune's trial files, each checkpoint it exports or evaluates)."""
    _, bucket, _, logged = lab
    for command, (log, pid) in logged.items():
        counts = reads(log, pid)
        assert counts, f"{command}: no read was logged"
        twice = {loc: n for loc, n in counts.items() if n > 1}
        assert not twice, f"{command} read these more than once: {twice}"
    resume_reads = reads(*logged["tune --resume"])
    assert storage.join(bucket, "ecg_ray_experiment.json") in resume_reads  # it did read the bucket, once
    local = reads(*logged["tune --resume (local, finished)"])
    assert sum(loc.endswith("/result.json") for loc in local) == 4 and sum(loc.endswith("trial_state.pt") for loc in local) >= 2


def test_report_predict_rerun_and_compare_take_the_bucket(lab, tmp_path, capsys):
    local, bucket, work, _ = lab
    assert main(["report", bucket, "--format", "csv"]) == 0
    assert "s3://ecg/lab/lab/report/trials.csv" in capsys.readouterr().out
    tables_out = storage.join(bucket.rsplit("/", 1)[0], "paper_tables")
    assert main(["report", local, "--out", tables_out, "--format", "csv", "latex"]) == 0  # a local folder's tables into the bucket
    written = storage.files(tables_out)
    assert {"trials.csv", "configs.csv", "configs.tex", "index.html"} <= set(written)
    pd.testing.assert_frame_equal(read_table(storage.join(tables_out, "configs.csv")),
                                  read_table(os.path.join(local, "report", "configs.csv")))

    records = tmp_path / "records.parquet"
    assert main(["data", "convert", "synthetic", str(records), "--experiment", str(work / "local" / "lab.yaml")]) == 0
    assert main(["predict", storage.join(bucket, "best_model.pt"), str(records), "--out", str(tmp_path / "there.csv")]) == 0
    assert main(["predict", os.path.join(local, "best_model.pt"), str(records), "--out", str(tmp_path / "here.csv")]) == 0
    there = pd.read_csv(tmp_path / "there.csv")
    pd.testing.assert_frame_equal(there, pd.read_csv(tmp_path / "here.csv"))
    assert "agreement" in there  # the best config's two seeds, as one model

    capsys.readouterr()
    assert main(["rerun", bucket, "t0000"]) == 0  # plain PyTorch, bit for bit against the bucket's records
    assert "bit for bit" in capsys.readouterr().out

    out = storage.join(bucket.rsplit("/", 1)[0], "compared")
    assert main(["compare", bucket, local, "--out", out, "--format", "csv"]) == 0
    best = read_table(storage.join(out, "best.csv"))
    value = [c for c in best.columns if c.startswith("best_val_macro_f1")][0]
    a, b = (g.set_index("rank")[value] for _, g in best.groupby("experiment"))
    pd.testing.assert_series_equal(a, b)  # the same run, in the bucket and on disk


def test_a_model_that_is_not_in_the_bucket_is_named(lab, tmp_path, capsys):
    _, bucket, _, _ = lab
    missing = storage.join(bucket, "no_such_model.pt")
    assert main(["predict", missing, str(tmp_path)]) == 2
    assert f"Model file {missing} does not exist" in capsys.readouterr().err


def test_repeat_from_the_bucket_into_the_bucket_reruns_the_best_config(lab, s3):
    local, bucket, work, _ = lab
    rc, _ = ecg_ray(["repeat", bucket, "--top", "1", "--seeds", "1", "--storage", s3.uri("repeats"), "--num-cpus", "2"],
                    work / "repeat.log")
    assert rc == 0, (work / "repeat.log").read_text()[-3000:]
    repeated = build_report(s3.uri("repeats", "lab_top1x1"))[1]
    source = build_report(bucket)
    best = source[0].iloc[0]
    same = source[1][(source[1]["lr"] == best["lr"]) & (source[1]["seed"] == 42)]
    cols = [c for c in EPOCH_COLUMNS if c not in ("epoch", "epoch_time_s")]
    # The same config and seed: every epoch the source ran is the same, bit for bit.
    mine = repeated.set_index("epoch").loc[same["epoch"], cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, same[cols].reset_index(drop=True), check_dtype=False)


def test_mlflow_logs_the_bucket_folder_to_a_real_server(lab, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from ecg_ray.results.integrations.tracking import EXP_DIR, ROLE

    _, bucket, _, _ = lab
    assert main(["report", bucket, "--mlflow", mlflow_uri, "--mlflow-experiment", "bucket"]) == 0
    client = MlflowClient(mlflow_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "bucket"]
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{EXP_DIR}` = '{bucket}'")
    (parent,) = [r for r in runs if r.data.tags[ROLE] == "experiment"]
    trials = {r.data.tags["trial_key"]: r for r in runs if r.data.tags[ROLE] == "trial"}
    ranked = read_table(storage.join(bucket, "report", "trials.csv")).set_index("trial_id")
    assert set(trials) == set(ranked.index)
    for key, run in trials.items():
        history = client.get_metric_history(run.info.run_id, "val_macro_f1")
        assert max(m.value for m in history) == pytest.approx(ranked.loc[key, "best_val_macro_f1"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report", "best_model.pt", "best_trial_model.pt"} <= artifacts  # copied out of the bucket for MLflow
