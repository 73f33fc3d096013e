"""The Tune driver: one deterministic trial per grid point, each a one-worker Ray Train run.

    ecg-ray tune experiments/quick.yaml

Layout of an experiment folder (storage_path/name):

    ecg_ray_experiment.json   config, grid, data hash and settings (written before any trial)
    data_splits.json          record ids of every split
    trial_status.json         each trial's Tune status (updated as trials end)
    progress.jsonl            one line per finished epoch of any trial, as it happens
    <trial dirs>/             Tune's params.json + result.json (one line per epoch)
    train_runs/<trial id>/    the Ray Train run of that trial: checkpoints, resumable
    report/                   ranked tables (ecg_ray.report)
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import ray
import ray.autoscaler.sdk
import ray.train
import ray.tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ecg_ray.config import ExperimentConfig, TrialConfig, experiment_from_dict, join_path
from ecg_ray.data import PreparedData, prepare
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.report import EXPERIMENT_FILE, STATUS_FILE
from ecg_ray.schedulers import METRIC, MODE, build_scheduler
from ecg_ray.storage import check_writable, read_json, remove_tree, write_json
from ecg_ray.trial import train_loop_per_worker
from ecg_ray.train import CUBLAS_WORKSPACE

SPLITS_FILE = "data_splits.json"
TRAIN_RUNS = "train_runs"
PROGRESS_FILE = "progress.jsonl"
PROGRESS_KEYS = ("epoch", "train_loss", "val_loss", "val_macro_f1", "epoch_time_s", "node_id", "pid")
CHECKPOINTS_KEPT = 2

QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a fresh local Ray."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # "local" starts a fresh instance even when a stale /tmp/ray/ray_current_cluster exists.
        # The dashboard stays on: Train's placement-group cleaner needs the State API it serves,
        # or a trial stopped by ASHA leaks its worker's resources. Loopback only.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1")


def resolve_use_gpu(cfg: ExperimentConfig) -> bool:
    """resources.use_gpu: 'auto' means a GPU per worker when the cluster has GPUs right now."""
    if cfg.resources.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(cfg.resources.use_gpu)


def _worker_resources(cfg: ExperimentConfig, use_gpu: bool) -> dict:
    res = {"CPU": cfg.resources.cpus_per_worker, **cfg.resources.custom_resources_per_worker}
    if use_gpu:
        res["GPU"] = cfg.resources.gpus_per_worker
    return res


def _trial_driver(config: dict, data_box: list, exp_path: str, settings: dict) -> None:
    """Tune trainable: run this grid point as a one-worker TorchTrainer and forward its reports."""
    trial_id = ray.tune.get_context().get_trial_id()
    use_gpu = settings["use_gpu"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "trial": config,
            "data_ref": data_box,  # a list keeps the ObjectRef unresolved until the worker reads it
            "threads": settings["threads"],
            "data_hash": settings["data_hash"],
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=use_gpu, resources_per_worker=settings["resources_per_worker"]
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            # Named from the trial id, never a timestamp: a retried or restored trial finds its checkpoints.
            name=trial_id,
            storage_path=join_path(exp_path, TRAIN_RUNS),
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=settings["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            worker_runtime_env={"env_vars": {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE, **QUIET_ENV}},
        ),
    )
    trainer.fit()


class EpochPrinter(ray.tune.Callback):
    """One line per finished epoch, and the trial's status in trial_status.json as it changes."""

    def __init__(self, exp_path: str):
        self.exp_path = exp_path

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "://" not in self.exp_path:
            # Live, one line per epoch (`tail -f` it): Tune's own result.json files reach the
            # storage path in batches, when it syncs a trial's folder.
            line = {"trial_id": trial.trial_id, "time": time.time(),
                    **{k: result.get(k) for k in PROGRESS_KEYS}}
            with open(os.path.join(self.exp_path, PROGRESS_FILE), "a") as f:
                f.write(json.dumps(line) + "\n")
        c = trial.config
        print(
            f"[ecg-ray] {trial.trial_id} lr={c.get('lr')} H={c.get('hidden_size')} dropout={c.get('dropout')} "
            f"{c.get('optimizer')}: epoch {result.get('epoch')}/{c.get('epochs')} "
            f"train_loss={result.get('train_loss', float('nan')):.4f} val_loss={result.get('val_loss', float('nan')):.4f} "
            f"val_macro_f1={result.get('val_macro_f1', float('nan')):.4f} ({result.get('epoch_time_s', 0):.1f}s)",
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        _update_statuses(self.exp_path, [(trial, "TERMINATED")])

    def on_trial_error(self, iteration, trials, trial, **info):
        _update_statuses(self.exp_path, [(trial, "ERROR")])


def _update_statuses(exp_path: str, changes) -> None:
    """Merge (trial, status) pairs into trial_status.json; statuses of earlier runs are kept."""
    path = join_path(exp_path, STATUS_FILE)
    merged = read_json(path) or {}
    for trial, status in changes:
        merged[trial.trial_id] = {"status": status, "last_epoch": (trial.last_result or {}).get("epoch")}
    write_json(path, merged)


def param_space(cfg: ExperimentConfig) -> dict:
    """Tune's search space: a grid_search for every listed key, constants for the rest."""
    base = dataclasses.asdict(TrialConfig(seed=cfg.seed))
    space = {}
    for key, default in base.items():
        value = cfg.search.get(key, default)
        space[key] = ray.tune.grid_search(value) if isinstance(value, list) and len(value) > 1 else (value[0] if isinstance(value, list) else value)
    return space


def _write_experiment_files(cfg: ExperimentConfig, data: PreparedData, settings: dict) -> None:
    exp_path = cfg.experiment_path
    write_json(
        join_path(exp_path, EXPERIMENT_FILE),
        {
            "config": cfg.to_dict(),
            "grid": [dataclasses.asdict(t) for t in cfg.grid()],
            "data_hash": data.data_hash,
            "data": data.meta,
            "settings": settings,
            "metric": METRIC,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    write_json(join_path(exp_path, SPLITS_FILE), {"data_hash": data.data_hash, "ids": data.ids})


def read_experiment_file(exp_path: str) -> dict:
    recorded = read_json(join_path(exp_path, EXPERIMENT_FILE))
    if recorded is None:
        raise ConfigError(f"{exp_path} is not an ecg_ray experiment folder: {EXPERIMENT_FILE} is missing. Pass the folder `ecg-ray tune` printed.")
    return recorded


def _tune_run_config(cfg: ExperimentConfig, callbacks) -> ray.tune.RunConfig:
    return ray.tune.RunConfig(
        name=cfg.name,
        storage_path=cfg.storage_root,
        failure_config=ray.tune.FailureConfig(max_failures=cfg.max_failures),
        callbacks=callbacks,
        verbose=1,
    )


def run_experiment(
    cfg: ExperimentConfig,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
) -> str:
    """Check storage, prepare the data once, then start Ray and tune every grid point.

    Args:
        cfg: the experiment.
        resume: continue the experiment in cfg.experiment_path (finished trials are kept).
        overwrite: allowed to start over in an existing experiment folder.
        address, num_cpus: passed to init_ray (ignored when Ray is already initialised).

    Returns:
        The experiment folder (a local path or a URI).
    """
    exp_path = cfg.experiment_path
    check_writable(cfg.storage_root)
    exists = read_json(join_path(exp_path, EXPERIMENT_FILE)) is not None
    if exists and not (resume or overwrite):
        raise ConfigError(
            f"The experiment folder {exp_path} already holds an experiment. Continue it with "
            f"`ecg-ray tune --resume {exp_path}`, start over with --overwrite, or choose another --name/--storage."
        )
    if resume and not exists:
        raise ConfigError(f"Nothing to resume: {exp_path} holds no {EXPERIMENT_FILE}.")
    data = prepare(cfg)  # every data error surfaces here, before Ray starts a single trial
    if overwrite and not resume and exists:
        remove_tree(exp_path)  # only once the new data is known to be good
    print(f"[ecg-ray] {data.describe()}", flush=True)
    for skipped in data.meta.get("skipped", []):
        print(f"[ecg-ray] skipped {skipped['split']} record {skipped['record']}: {skipped['problem']}", flush=True)
    if data.meta.get("skipped"):
        print(f"[ecg-ray] skipped {len(data.meta['skipped'])} bad record(s) (on_bad_record: skip)", flush=True)
    if resume:
        recorded = read_experiment_file(exp_path)["data_hash"]
        if recorded != data.data_hash:
            raise ConfigError(
                f"{exp_path} was run on data {recorded} but the data now hashes to {data.data_hash}; "
                "resume with the same data source and settings, or start a new experiment."
            )
    init_ray(address, num_cpus)  # only now: bad input never waits for a cluster
    use_gpu = resolve_use_gpu(cfg)
    if use_gpu and not ray.cluster_resources().get("GPU"):
        print("[ecg-ray] trials ask for a GPU but the cluster has none right now: they wait until the "
              "autoscaler adds GPU nodes (use --cpu to train on CPUs instead)", flush=True)
    settings = {
        "use_gpu": use_gpu,
        "resources_per_worker": _worker_resources(cfg, use_gpu),
        "threads": cfg.resources.cpus_per_worker,
        "data_hash": data.data_hash,
        "max_failures": cfg.max_failures,
    }
    if not resume:
        _write_experiment_files(cfg, data, settings)
    data_ref = ray.put(data)  # once per experiment; every trial on every node reads this object
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial_driver, data_box=[data_ref], exp_path=exp_path, settings=settings),
        {"CPU": cfg.resources.cpus_per_trial_driver},
    )
    callbacks = [EpochPrinter(exp_path)]
    if resume:
        tuner = ray.tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(
            trainable,
            param_space=param_space(cfg),
            tune_config=ray.tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                scheduler=build_scheduler(cfg.scheduler, cfg.epochs),
                max_concurrent_trials=cfg.resources.max_concurrent_trials or None,
            ),
            run_config=_tune_run_config(cfg, callbacks),
        )
    interrupted = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop_gracefully(sig, frame):
        # Tune stops on SIGUSR1 the way it does on Ctrl-C: it saves the experiment state once
        # more. Going through our own handler tells us afterwards that the run was cut short.
        interrupted.set()
        for s in previous:
            signal.signal(s, previous[s])  # a second Ctrl-C stops at once
        os.kill(os.getpid(), signal.SIGUSR1)

    if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig in previous:
            signal.signal(sig, stop_gracefully)
    try:
        grid = tuner.fit()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _release_autoscaler_requests()
    if interrupted.is_set():
        # Tune marks the trials it stopped as terminated in memory; trial_status.json keeps
        # what the callback saw end, and --resume continues the rest.
        raise ExperimentInterrupted(exp_path)
    _record_statuses(grid, exp_path)
    return exp_path


class ExperimentInterrupted(EcgRayError):
    """The driver was stopped (Ctrl-C, SIGTERM); the experiment can be resumed."""

    def __init__(self, exp_path: str):
        super().__init__(f"Stopped. Finished trials and checkpoints are kept; continue with: ecg-ray tune --resume {exp_path}")
        self.exp_path = exp_path


def _release_autoscaler_requests() -> None:
    """Let the autoscaler remove idle GPU nodes as soon as the experiment ends.

    Each Train run asks Ray's AutoscalingCoordinator actor for its worker's resources.
    That request can outlive the run by minutes, and the detached actor itself lives
    on the node of the first trial, so that node is never idle (ray-project/ray#58481).
    Ending the actor and clearing the standing request lets idle nodes go; the next
    Train run creates a fresh coordinator.
    """
    try:
        coordinator = ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
    except ValueError:
        return  # no Train run asked for resources through it
    ray.kill(coordinator, no_restart=True)
    ray.autoscaler.sdk.request_resources(bundles=[])


def _record_statuses(grid, exp_path: str) -> None:
    """Write every trial's final Tune status to trial_status.json.

    The callback records statuses as trials end, which survives a killed driver; this
    pass after fit() is the authoritative one (in one resumed run here the callback's
    record of a trial was missing). ResultGrid exposes counts, not per-trial statuses,
    hence its experiment analysis.
    """
    _update_statuses(exp_path, [(t, t.status) for t in grid._experiment_analysis.trials])


def unfinished_trials(cfg: ExperimentConfig) -> tuple[int, int]:
    """(trials that have not ended, trials that ended in an error) according to trial_status.json."""
    status = read_json(join_path(cfg.experiment_path, STATUS_FILE)) or {}
    ended = [v["status"] for v in status.values() if v["status"] in ("TERMINATED", "ERROR")]
    return len(cfg.grid()) - len(ended), ended.count("ERROR")


def config_for_resume(exp_path: str) -> ExperimentConfig:
    """The ExperimentConfig recorded in an experiment folder."""
    raw = read_experiment_file(exp_path)["config"]
    return experiment_from_dict(raw, origin=join_path(exp_path, EXPERIMENT_FILE))
