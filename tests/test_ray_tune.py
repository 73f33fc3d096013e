"""A real local Ray runs experiments/quick.yaml end to end through the CLI."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_ray.commands.main import main
from ecg_ray.config import TrialConfig, load_experiment
from ecg_ray.data.prepare import prepare
from ecg_ray.schema import EPOCH_COLUMNS
from ecg_ray.training.loop import build_trial, run_epoch
from ecg_ray.tuning import fast_path
from helpers import Payload, fast_path_only, tiny_experiment

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def quick_run(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("results")
    assert main(["tune", "experiments/quick.yaml", "--storage", str(storage)]) == 0
    return storage / "quick"


def test_tables_rank_every_trial_by_val_macro_f1(quick_run, capsys):
    trials = pd.read_csv(quick_run / "report" / "trials.csv")
    assert len(trials) == 2
    assert trials["best_val_macro_f1"].is_monotonic_decreasing
    assert trials["rank"].tolist() == [1, 2]
    assert set(trials["lr"]) == {0.001, 0.0005}
    assert (trials["status"] == "TERMINATED").all()
    meta = json.loads((quick_run / "ecg_ray_experiment.json").read_text())
    assert (trials["data_hash"] == meta["data_hash"]).all()
    hist = pd.read_csv(quick_run / "report" / "history.csv")
    for _, t in trials.iterrows():
        h = hist[hist["trial_id"] == t["trial_id"]]
        assert h["epoch"].tolist() == list(range(1, t["epochs_run"] + 1))
        assert h["val_macro_f1"].max() == t["best_val_macro_f1"]
        # ASHA may stop a trial; one that ran all epochs was not stopped.
        assert t["early_stopped"] == (t["epochs_run"] < 4)
    splits = json.loads((quick_run / "data_splits.json").read_text())
    assert len(splits["ids"]["train"]) == 640 and len(splits["ids"]["val"]) == 160


def test_tensorboard_files_only_when_asked(quick_run, ray_local, tmp_path):
    """Tune's own TensorBoard logger (tensorboardX imports torch in the driver) is left out unless
    `--tensorboard` asks for it; Tune's switch for its loggers is as it was after the run."""
    import os

    assert not list(quick_run.rglob("events.out.tfevents*"))
    exp = tiny_experiment(tmp_path, "tb", tmp_path, search={"lr": 0.001})
    assert main(["tune", str(exp), "--tensorboard", "--format", "csv"]) == 0
    assert [p.parent.parent for p in (tmp_path / "tb").glob("*/events.out.tfevents*")] == [tmp_path / "tb"]
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ


def test_the_report_imports_start_when_the_last_trials_begin_their_last_epoch(tmp_path, capsys):
    """Every trial running at once (the quick demo): the imports start when one begins its last epoch,
    not only once one has ended, so the phases after tuning find them done."""
    from types import SimpleNamespace

    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.tuning.progress import EpochPrinter

    def trial(key):
        return SimpleNamespace(config={"trial_key": key, "epochs": 4}, status="RUNNING", metric_analysis={},
                               local_path=str(tmp_path / "staged" / key))

    printer = EpochPrinter(ExperimentDir.parse(str(tmp_path)), n_trials=2)
    t = [trial("t0000"), trial("t0001")]
    printer.on_trial_result(0, t, t[0], {"epoch": 2})
    assert printer.warming is None  # two epochs still to go
    printer.on_trial_result(0, t, t[0], {"epoch": 3})  # its last epoch starts, and no trial is left to start
    assert printer.warming is not None
    printer.warming.join(timeout=120)
    assert "epoch 3/4" in capsys.readouterr().out


@fast_path_only()
def test_a_trial_is_two_processes_with_no_synchronisation_actor(quick_run, ray_local):
    """Each trial ran as its Tune actor (with Train's controller) and its Ray Train worker; Train's
    synchronisation actor was answered in place (ecg_ray.tuning._ray_internals.SoloBarrier), so the actor table of
    this session's Ray, dead actors included, has workers but no SynchronizationActor."""
    from ray._private.state import actors

    classes = [a["ActorClassName"] for a in actors().values()]
    assert classes.count("RayTrainWorker") >= 2 and classes.count("ImplicitFunc") >= 2
    assert "SynchronizationActor" not in classes


@fast_path_only()
def test_a_local_run_starts_a_tune_actor_and_a_train_worker_per_trial_and_no_other_worker(tmp_path):
    """`ecg-ray tune` on the Ray it starts (its own temp dir here): the only worker processes are each
    trial's Tune actor and Ray Train worker. No autoscaling coordinator (a local Ray has no autoscaler:
    NoAutoscaler), no synchronisation actor (SoloBarrier), no idle worker started ahead and never used."""
    import os
    import shutil
    import subprocess
    import tempfile

    exp = tiny_experiment(tmp_path, "local", tmp_path / "results")
    ray_tmp = Path(tempfile.mkdtemp(prefix="er", dir="/tmp"))  # short: Ray's socket paths are limited
    try:
        run = subprocess.run(["ecg-ray", "tune", str(exp), "--num-cpus", "2", "--format", "csv"],
                             env={**os.environ, "RAY_TMPDIR": str(ray_tmp)}, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        (logs,) = ray_tmp.glob("ray/session_2*/logs")
        workers = {path.name.rsplit("_", 1)[1][:-len(".log")] for path in logs.glob("python-core-worker-*.log")}
        hosted = {}  # worker pid -> the class of the actor it started as (Ray's first ":actor_name:" line)
        for out in logs.glob("worker-*.out"):
            names = [line.split(":actor_name:")[1].strip() for line in out.read_text().splitlines() if ":actor_name:" in line]
            hosted[out.name.rsplit("-", 1)[1][:-len(".out")]] = names[0] if names else None
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert set(hosted) == workers  # every worker process's own log
    assert sorted(hosted.values(), key=str) == ["ImplicitFunc"] * 2 + ["RayTrainWorker"] * 2
    assert len(pd.read_csv(tmp_path / "results" / "local" / "report" / "trials.csv")) == 2


@fast_path_only()
def test_no_autoscaler_sends_nothing_and_is_undone():
    from ray.train.v2._internal.execution.scaling_policy import scaling_policy

    from ecg_ray.tuning._ray_internals import NoAutoscaler, no_autoscaler

    saved = scaling_policy.TrainAutoscalingCoordinatorClient
    with no_autoscaler():
        client = scaling_policy.TrainAutoscalingCoordinatorClient("train-run")
        assert isinstance(client, NoAutoscaler)
        assert client.send_resource_request(None, 1) is None and client.maybe_send_resource_request(None, 1) is None
        assert client.cancel_resource_request() is None
    assert scaling_policy.TrainAutoscalingCoordinatorClient is saved


def test_trials_one_after_another_share_their_tune_actor(ray_local, tmp_path):
    """Three trials in one slot: Tune reuses the first trial's actor for the next two (reuse_actors),
    each trial still gets a Train worker of its own, and each is the same as a run on its own. Which
    process ran what, from what Tune and the worker report: Tune's `pid` (the trainable's process) in
    each trial's result.json, the worker's `worker_pid` in progress.jsonl."""
    exp = tiny_experiment(tmp_path, "one_slot", tmp_path, search={"lr": [0.001, 0.0005, 0.0002]},
                          resources={"max_concurrent_trials": 1})
    assert main(["tune", str(exp), "--format", "csv"]) == 0
    folder = tmp_path / "one_slot"
    results = [json.loads(line) for f in folder.glob("*/result.json") for line in f.read_text().splitlines() if line.strip()]
    assert len(results) == 3 and len({r["pid"] for r in results}) == 1
    progress = [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines()]
    assert len({p["worker_pid"] for p in progress}) == 3 and not ({p["worker_pid"] for p in progress} & {r["pid"] for r in results})
    trials = pd.read_csv(tmp_path / "one_slot" / "report" / "trials.csv")
    assert sorted(trials["status"]) == ["TERMINATED"] * 3
    cfg = load_experiment(exp)
    data = prepare(cfg)
    torch.set_num_threads(1)
    for trial in cfg.grid():
        row = trials[trials["lr"] == trial.lr].iloc[0]
        assert run_epoch(build_trial(trial, data.weights), data, trial.batch_size)["val_macro_f1"] == row["best_val_macro_f1"]


def test_the_report_imports_start_once_no_trial_is_left_to_start(tmp_path, capsys):
    """EpochPrinter's count of ended and running trials: while trials wait for a slot nothing is
    imported; when the last has started and one ends (a slot falls idle) the report's imports run
    in a thread, once, and a local Ray's shutdown waits for that thread."""
    from types import SimpleNamespace

    from ecg_ray.tuning import progress
    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.tuning.progress import EpochPrinter

    def trial(key, status):
        return SimpleNamespace(config={"trial_key": key}, status=status, metric_analysis={})

    printer = EpochPrinter(ExperimentDir.parse(str(tmp_path)), n_trials=4)
    t = [trial("t0000", "RUNNING"), trial("t0001", "RUNNING"), trial("t0002", "PENDING"), trial("t0003", "PENDING")]
    printer._say(t, t[0], "finished", ended=True)  # t0002 and t0003 still to start
    assert printer.warming is None
    t[0].status, t[2].status, t[3].status = "TERMINATED", "RUNNING", "RUNNING"
    printer._say(t, t[1], "finished", ended=True)  # 2 ended + 2 running: nothing left to start
    assert printer.warming is not None
    first = printer.warming
    assert first in progress._report_imports  # the local Ray's shutdown joins it first
    t[1].status = "TERMINATED"
    printer._say(t, t[2], "finished", ended=True)
    assert printer.warming is first
    first.join(timeout=60)
    assert not first.is_alive()
    assert "Trials: 3 of 4 ended, 1 running" in capsys.readouterr().out


@fast_path_only()
def test_solo_barrier_answers_for_one_worker_and_refuses_more(ray_local):
    import ray
    from ray.train.v2._internal.execution.worker_group import state, worker_group

    from ecg_ray.tuning._ray_internals import SoloBarrier, solo_barrier

    saved = worker_group.SynchronizationActor, state._shutdown_sync_actor
    with solo_barrier():
        barrier = worker_group.SynchronizationActor.options(label_selector={}).remote(timeout_s=1, warn_interval_s=1)
        assert isinstance(barrier, SoloBarrier)
        state._shutdown_sync_actor(barrier)  # nothing to kill
    assert (worker_group.SynchronizationActor, state._shutdown_sync_actor) == saved
    call = {"world_rank": 0, "data": "checkpoint_0001", "caller_method_name": "ray.train.report", "collective_seq": 3, "relaxable": True}
    assert ray.get(barrier.broadcast_from_rank_zero.remote(world_size=1, **call)) == "checkpoint_0001"
    assert ray.get(barrier.set_required_ranks.remote([0])) is True and ray.get(barrier.reset.remote()) is None
    with pytest.raises(RuntimeError, match="serves one worker, not 2"):
        barrier.broadcast_from_rank_zero.remote(world_size=2, **call)


def test_each_epoch_was_reported_with_a_checkpoint(quick_run):
    runs = sorted((quick_run / "train_runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        ckpts = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
        assert 1 <= len(ckpts) <= 2 and all((c / "trial_state.pt").is_file() for c in ckpts)


def test_ray_trials_match_an_in_process_run_bit_for_bit(quick_run):
    """Same config + seed -> same metrics, whichever worker ran it and whatever ran beside it."""
    cfg = load_experiment("experiments/quick.yaml")
    data = prepare(cfg)
    hist = pd.read_csv(quick_run / "report" / "history.csv")
    records = [json.loads(l) for p in quick_run.glob("*/result.json") for l in p.read_text().splitlines() if l.strip()]
    torch.set_num_threads(1)
    for trial in cfg.grid():
        reported = sorted((r for r in records if r["config"]["lr"] == trial.lr), key=lambda r: r["epoch"])
        state = build_trial(trial, data.weights)
        for r in reported:
            ours = run_epoch(state, data, trial.batch_size)
            assert {k: ours[k] for k in EPOCH_COLUMNS} == {k: r[k] for k in EPOCH_COLUMNS}
            assert ours["val_confusion"] == r["val_confusion"]
    assert len(hist) == len(records)


def test_report_command_rebuilds_identical_tables(quick_run, tmp_path):
    first = {p.name: p.read_bytes() for p in (quick_run / "report").iterdir()}
    assert main(["report", str(quick_run), "--out", str(tmp_path)]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first


def test_running_again_without_resume_refuses(quick_run, capsys):
    assert main(["tune", "experiments/quick.yaml", "--storage", str(quick_run.parent)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_refuses_different_data(quick_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "quick"
    shutil.copytree(quick_run, copy)
    meta = json.loads((copy / "ecg_ray_experiment.json").read_text())
    meta["config"]["data"]["n_records"] = 400  # the folder now claims other data than it was run on
    (copy / "ecg_ray_experiment.json").write_text(json.dumps(meta))
    assert main(["tune", "--resume", str(copy)]) == 2
    assert "continue it (--resume, --extend) with the same data source and settings" in capsys.readouterr().err


def test_resume_of_a_finished_experiment_reruns_nothing(quick_run):
    before = (quick_run / "progress.jsonl").read_text()
    assert main(["tune", "--resume", str(quick_run)]) == 0
    assert (quick_run / "progress.jsonl").read_text() == before  # no epoch ran again


def test_checkpoints_written_under_ray_describe_themselves(quick_run):
    """Each trial's checkpoint names its trial config and data, and loads with torch's safe loader."""
    from ecg_ray.training.loop import read_checkpoint

    meta = json.loads((quick_run / "ecg_ray_experiment.json").read_text())
    grid = [TrialConfig(**t) for t in meta["grid"]]
    seen = []
    for path in sorted((quick_run / "train_runs").glob("*/checkpoint_*/trial_state.pt")):
        saved = read_checkpoint(path)
        assert saved["data_hash"] == meta["data_hash"]
        assert saved["data_settings"] == meta["data"]["settings"]
        assert "ray" in saved["versions"] and "torch" in saved["versions"]
        seen.append(TrialConfig(**saved["trial"]))
    assert set(seen) == set(grid)
    assert meta["settings"] == {"use_gpu": False, "resources_per_worker": {"CPU": 1}, "threads": 1,
                                "data_hash": meta["data_hash"], "max_failures": 2, "worker_start_timeout_s": 600.0,
                                "train_env": {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600.0",
                                              "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_METRICS_ENABLED": "0"},
                                "autoscaler": True,  # the test session's Ray, which this run did not start:
                                "reuse_workers": False,  # it has an autoscaler, and its workers are not reused
                                "fast_path": fast_path.choose("auto").fast}




def test_resume_and_report_never_load_a_planted_pickle(quick_run, tmp_path):
    import pickle
    import shutil

    copy = tmp_path / "quick"
    shutil.copytree(quick_run, copy)
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(Payload(marker))
    assert not marker.exists()
    planted = [copy / "tuner.pkl", copy / "experiment_state-2099-01-01_00-00-00.json", copy / "trainable.pkl",
               copy / "searcher-state-2099-01-01_00-00-00.pkl", copy / "train_runs" / "t0001" / "state.pkl"]
    planted += [d / "params.pkl" for d in copy.glob("trial_driver_*")]
    for path in planted:
        path.write_bytes(payload)
    status = json.loads((copy / "trial_status.json").read_text())
    del status["t0001"]  # one trial left to resume: its Train run picks up from its checkpoint
    (copy / "trial_status.json").write_text(json.dumps(status))
    progress = (copy / "progress.jsonl").read_text()

    assert main(["tune", "--resume", str(copy)]) == 0
    assert main(["report", str(copy), "--out", str(tmp_path / "tables")]) == 0
    assert not marker.exists()
    # Its last checkpoint was its final epoch: nothing trained again; that epoch's result was reported once more.
    new = [json.loads(l) for l in (copy / "progress.jsonl").read_text().splitlines()[len(progress.splitlines()):]]
    final = [json.loads(l) for l in progress.splitlines() if json.loads(l)["trial_id"] == "t0001"][-1]
    assert [(r["trial_id"], r["epoch"], r["val_macro_f1"]) for r in new] == [("t0001", 4, final["val_macro_f1"])]
    assert json.loads((copy / "trial_status.json").read_text())["t0001"]["status"] == "TERMINATED"
    assert pd.read_csv(tmp_path / "tables" / "trials.csv")["best_val_macro_f1"].tolist() == \
        pd.read_csv(quick_run / "report" / "trials.csv")["best_val_macro_f1"].tolist()


def test_rerun_reproduces_a_ray_trial_bit_for_bit_and_names_a_planted_difference(quick_run, tmp_path, capsys):
    import shutil

    assert main(["rerun", str(quick_run), "t0001"]) == 0
    out = capsys.readouterr().out
    assert "t0001: all 4 recorded epoch(s) reproduced bit for bit" in out and out.count("identical (") == 4
    copy = tmp_path / "quick"
    shutil.copytree(quick_run, copy)
    result = next(p for p in copy.glob("*/result.json") if '"trial_key": "t0001"' in (p.parent / "params.json").read_text())
    lines = [json.loads(l) for l in result.read_text().splitlines()]
    lines[2]["val_loss"] += 1e-9  # epoch 3, off in the last digits
    result.write_text("".join(json.dumps(l) + "\n" for l in lines))
    assert main(["rerun", str(copy), "t0001"]) == 1
    captured = capsys.readouterr()
    assert "epoch 2: identical" in captured.out and "epoch 3: identical" not in captured.out
    assert "t0001 differs at epoch 3: val_loss was" in captured.err
    assert main(["rerun", str(copy), "t9999"]) == 2
    assert "has no trial 't9999'; its trials are t0000, t0001" in capsys.readouterr().err


def test_best_model_is_the_best_epoch_and_predict_reproduces_its_val_predictions(quick_run, tmp_path, capsys):
    """best_model.pt loads without Ray; predicting the val split gives the best epoch's val confusion matrix."""
    import subprocess
    import sys

    from ecg_ray.results.inference.predict import load_model

    trials = pd.read_csv(quick_run / "report" / "trials.csv")
    best = trials.iloc[0]
    _, saved = load_model(str(quick_run / "best_model.pt"))
    assert (saved["trial_id"], saved["epoch"]) == (best["trial_id"], best["best_epoch"])
    assert saved["metrics"]["val_macro_f1"] == best["best_val_macro_f1"]
    code = f"import sys; from ecg_ray.results.inference.predict import load_model; load_model({str(quick_run / 'best_model.pt')!r}); print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"

    data = prepare(load_experiment("experiments/quick.yaml"))
    val = pd.DataFrame({"record": data.ids["val"], "signal": list(data.x["val"].astype(np.float64)), "label": data.y["val"]})
    val.to_parquet(tmp_path / "val.parquet")
    assert main(["predict", str(quick_run / "best_model.pt"), str(tmp_path / "val.parquet"), "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert pred["record"].tolist() == data.ids["val"]
    assert np.allclose(pred[["p_N", "p_A", "p_O", "p_noisy"]].sum(axis=1), 1.0)
    letters = ["N", "A", "O", "~"]
    confusion = [[int(((pred["label"] == t) & (pred["predicted"] == p)).sum()) for p in letters] for t in letters]
    assert confusion == saved["metrics"]["val_confusion"]


def test_predict_reads_a_challenge_folder_without_labels_and_refuses_bad_records(quick_run, tmp_path, capsys):
    from helpers import write_challenge

    from ecg_ray.data.synthetic import generate

    rs = generate(6, seed=9, difficulty="easy")
    rs.ids = [f"B{i:05d}" for i in range(6)]
    folder = write_challenge(tmp_path / "hidden", rs)
    (folder / "REFERENCE.csv").unlink()  # the hidden test set has no labels
    model = str(quick_run / "best_model.pt")
    assert main(["predict", model, str(folder)]) == 0
    out = capsys.readouterr().out
    assert all(r in out for r in rs.ids) and "| label |" not in out and "predicted_class" in out
    assert main(["predict", model, str(folder / "B00002.mat")]) == 0
    assert "B00002" in capsys.readouterr().out
    (folder / "B00003.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(512) + b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert main(["predict", model, str(folder)]) == 2
    assert "B00003.mat is a MATLAB v7.3 (HDF5) file" in capsys.readouterr().err
    assert main(["predict", model, str(folder), "--on-bad-record", "skip"]) == 0
    assert "skipped record B00003" in capsys.readouterr().out


def test_costs_are_measured_after_tuning_and_compare_pairs_two_real_runs(quick_run, tmp_path, capsys):
    """The quick demo's costs.json (on this CPU, at a worker's one thread) reaches its configs table; a
    second real experiment on the same data and split is paired with it by `ecg-ray compare`."""
    costs = json.loads((quick_run / "costs.json").read_text())
    assert costs["repeats"] == 5 and len(costs["rows"]) == 1  # two learning rates, one model shape
    shape = costs["rows"][0]
    assert shape["params"] == 448_452 and shape["macs_per_record"] == 19_161_584
    assert 0 < shape["latency_b1_ms"] < shape["latency_b256_ms"] and shape["latency_device"].endswith("1 thread(s)")
    configs = pd.read_csv(quick_run / "report" / "configs.csv")
    assert configs["params"].tolist() == [448_452] * 2 and configs["epoch_time_s"].gt(0).all()
    other = tiny_experiment(tmp_path, "other", tmp_path, search={"lr": 0.002},
                            data={"n_records": 800})  # quick.yaml's data: the same records and split
    assert main(["tune", str(other), "--format", "csv"]) == 0
    assert main(["compare", str(quick_run), str(tmp_path / "other"), "--out", str(tmp_path / "cmp")]) == 0
    pairs = pd.read_csv(tmp_path / "cmp" / "pairs.csv")
    assert pairs["paired"].tolist() == [True] and pairs["shared_seeds"].astype(str).tolist() == ["42"]
    best = pd.read_csv(tmp_path / "cmp" / "best.csv")
    assert best["experiment"].tolist() == ["quick"] * 2 + ["other"]
    assert "quick vs other: the same data and split" in capsys.readouterr().out
