"""One trial: its Tune driver (a one-worker Ray Train run) and the loop inside that worker.

    ecg-ray tune experiments/quick.yaml     # runs this once per grid point

`trial_driver` is the Tune trainable: it builds the trial's WorkerSpec and runs a
`TrialTrainer` (a DataParallelTrainer with the plain BackendConfig: one worker needs no
torch.distributed process group, whose TCPStore would listen on every interface and
take seconds to start), whose controller runs in the trial's Tune actor, and whose
synchronisation barrier for a group of one is answered in place (SoloBarrier): a trial is two
processes, that actor and the worker.
`train_loop_per_worker` is what that worker runs: it reads the
prepared arrays from Ray's object store (put there once per experiment by
ecg_ray.tune), builds the trial from its seed, resumes from the latest checkpoint when
Ray Train restarts it, and reports metrics plus a self-describing checkpoint after
every epoch.

This module is imported by the trial's Tune actor and by its worker when they unpickle these
functions, so it imports no torch, scikit-learn or ecg_ray.train at the top: only the worker
needs them, and the Tune actor starts about two seconds sooner without.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import ray
import ray.train
import ray.tune
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.controller import TrainController
from ray.train.v2._internal.execution.scaling_policy import scaling_policy as scaling_policy_module
from ray.train.v2._internal.execution.worker_group import state as worker_group_state
from ray.train.v2._internal.execution.worker_group import worker_group as worker_group_module
from ray.train.v2.api.callback import UserCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from ray.train.v2.api.result import Result
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.tune.trainable import trainable as trainable_module

from ecg_ray.config import CUBLAS_WORKSPACE, ExperimentConfig, RunSettings, TrialConfig, WorkerSpec
from ecg_ray.expdir import CHECKPOINT_FILE, ExperimentDir
from ecg_ray.schema import RANK_METRIC, RANK_MODE, STARTUP_PARTS, TRIAL_KEY
from ecg_ray.slots import REUSABLE, STOP, RecordPlacementGroup, ReusingController, ReusingWorkerGroup

SPEC_KEY = "spec"  # the one key of train_loop_config: a WorkerSpec

QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


# Ray Train copies these from the process that calls fit() (the trial driver) to its controller.
# How long Train waits for its worker's placement group before it gives it up and asks again.
WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
AHEAD_WAIT_S = 7 * 86400.0  # a trial started ahead waits for a slot as long as other trials run
# How often the controller polls its worker, which is also how soon it sees a report and the
# end of the run: Ray's 2 s made every trial's first report and its end wait up to 2 s more.
HEALTH_CHECK_ENV, HEALTH_CHECK_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 0.2
# An actor per run that watches for node drains (spot preemption); a local Ray is never drained.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


# Ray Train's Prometheus metrics of each run (read where fit() is called); the report has its own.
METRICS_ENV = "RAY_TRAIN_METRICS_ENABLED"


class TrialTrainer(DataParallelTrainer):
    """A one-worker Train run whose controller runs in the trial's own Tune actor.

    Ray Train 2 runs its controller in an actor of its own, and Tune's bridge (TuneReportCallback)
    adds a queue actor that carries the controller's reports back: two more processes per trial,
    started one after the other before the worker, each importing Ray Train. Here the controller
    (Ray's TrainController, unchanged: placement group, worker group, checkpoint manager, failure
    policy) runs in this process, as Ray Train 1's did, and hands each
    report to Tune directly (TuneReport). The worker is still a Ray Train worker in its placement
    group, holding the trial's GPU or CPUs. Without Ray Data: Train's Ray Data callback would start
    a DatasetManager actor per trial that this loop never asks for a shard. And without Train's
    placement-group cleaner, a detached actor per run that polls for its controller's death (a
    process per trial: 1.8 s of each trial's start-up and 0.8 s of its end on a 2-core machine):
    the run records its placement group (RecordPlacementGroup), and the Tune driver, which sees
    every trial end, releases what is left of it (release_placement_group). Nor Train's
    synchronisation actor: its worker group of one gets a SoloBarrier (solo_barrier). With
    `reuse_worker`, the controller keeps a worker that finished cleanly for this Tune actor's next
    trial, and starts in one it kept (ecg_ray.slots.ReusingController).
    """

    def __init__(self, *args, autoscaler: bool = True, reuse_worker: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.autoscaler = autoscaler  # False: no cluster autoscaler to ask for the worker (NoAutoscaler)
        self.reuse_worker = reuse_worker

    def _create_default_callbacks(self):
        kept = [cb for cb in super()._create_default_callbacks()
                if not isinstance(cb, (DatasetsCallback, PlacementGroupCleanerCallback))]
        return [*kept, RecordPlacementGroup(self.run_config.name)]

    def _initialize_and_run_controller(self, **controller_init_kwargs) -> Result:
        with solo_barrier(), (contextlib.nullcontext() if self.autoscaler else no_autoscaler()):
            controller = (ReusingController if self.reuse_worker else TrainController)(**controller_init_kwargs)
            try:
                asyncio.run(controller.run())
            except BaseException as error:  # Tune stopping the trial (SystemExit from its report), or an error
                # What TrainController.abort does, without ending this process: the worker group and its
                # placement group go now, not when the Tune driver sees the trial end; or, where Tune
                # stopped the trial and workers are reused, the worker ends its loop and is kept.
                controller._controller_callback_manager.invoke_best_effort("before_controller_abort")
                group = controller._worker_group
                if group and not (isinstance(error, SystemExit) and isinstance(group, ReusingWorkerGroup) and group.stop_and_keep()):
                    group.abort()
                raise
            return controller.get_result()


def _rank_zero_data(world_rank: int, world_size: int, data=None, caller_method_name: str = "", **_seq):
    """SynchronizationActor.broadcast_from_rank_zero for a group of one: rank 0 is every rank, so the
    barrier is passed as soon as it is reached, and the data broadcast is its own."""
    if world_size != 1:
        raise RuntimeError(f"{caller_method_name}: SoloBarrier serves one worker, not {world_size}")
    return data


def _required_ranks_set(ranks) -> bool:
    return True


def _nothing_to_reset() -> None:
    return None


class _AnswerNow:
    """An actor method stand-in: `.remote(...)` computes the answer in the calling process and
    returns it as an ObjectRef, which `ray.get` reads as it reads an actor's."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        return ray.put(self.fn(*args, **kwargs))


class SoloBarrier:
    """Ray Train's synchronisation actor for a worker group of one, without its process.

    Ray Train starts a SynchronizationActor per worker group: each ray.train.report (and Train's
    barrier and broadcast) waits there until every rank has called, then returns rank 0's data.
    With one worker that wait is over as soon as it begins; this object answers the same calls
    (broadcast_from_rank_zero, set_required_ranks, reset) where they are made, the worker or the
    controller. One process per trial less: it took 1.3 s of a CPU per trial on a 2-core machine,
    as the trial started.
    """

    def __init__(self):
        self.broadcast_from_rank_zero = _AnswerNow(_rank_zero_data)
        self.set_required_ranks = _AnswerNow(_required_ranks_set)
        self.reset = _AnswerNow(_nothing_to_reset)


class _SoloBarrierClass:
    """Stands in for the SynchronizationActor class in Ray Train's worker-group module:
    `SynchronizationActor.options(...).remote(...)` gives a SoloBarrier."""

    @staticmethod
    def options(**_options):
        return _SoloBarrierClass

    @staticmethod
    def remote(**_init_kwargs) -> SoloBarrier:
        return SoloBarrier()


def _shutdown_sync_actor(sync_actor, _kill_actor=worker_group_state._shutdown_sync_actor) -> None:
    if not isinstance(sync_actor, SoloBarrier):  # nothing to kill: no actor, no process
        _kill_actor(sync_actor)


@contextlib.contextmanager
def swapped(target, **values):
    """Set attributes of `target` (a module or class of Ray's) for the duration of the block, then
    put back what was there."""
    saved = {name: getattr(target, name) for name in values}
    for name, value in values.items():
        setattr(target, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


@contextlib.contextmanager
def solo_barrier():
    """While a TrialTrainer's controller runs in this process (a trial's Tune actor): its worker group
    of one gets a SoloBarrier, not a SynchronizationActor. Two names in Ray Train's worker-group
    modules (pinned Ray; tests/test_ray_tune.py checks that no SynchronizationActor starts)."""
    with swapped(worker_group_module, SynchronizationActor=_SoloBarrierClass), \
            swapped(worker_group_state, _shutdown_sync_actor=_shutdown_sync_actor):
        yield


class NoAutoscaler:
    """Ray Train's autoscaling-coordinator client, for a Ray without an autoscaler (a local one that
    ecg_ray started): there is nobody to ask for the worker's resources, so nothing is sent.

    Ray Train's scaling policy registers each run's worker resources with a cluster-wide coordinator
    actor, which passes them to the autoscaler; a local Ray has no autoscaler, and the coordinator
    cost a process and 0.8 s of a CPU per experiment on a 2-core machine, plus a round trip to it as
    every trial started and ended."""

    def __init__(self, requester_id: str):
        self.requester_id = requester_id

    def send_resource_request(self, scaling_config, num_workers: int) -> None:
        return None

    def maybe_send_resource_request(self, scaling_config, num_workers: int) -> None:
        return None

    def cancel_resource_request(self) -> None:
        return None


@contextlib.contextmanager
def no_autoscaler():
    """While a TrialTrainer's controller runs on a Ray without an autoscaler: its scaling policy gets a
    NoAutoscaler (one name in Ray Train's scaling-policy module, pinned Ray; tests/test_ray_tune.py
    checks that no coordinator starts on a local Ray)."""
    with swapped(scaling_policy_module, TrainAutoscalingCoordinatorClient=NoAutoscaler):
        yield


def _disable_ipython_if_loaded(_disable=trainable_module.disable_ipython) -> None:
    """Tune's Trainable clears IPython's shell in every Tune actor as it starts, importing IPython to do
    so (0.2 s of a CPU per actor where IPython is installed); a process that never imported IPython
    has no shell to clear."""
    if "IPython" in sys.modules:
        _disable()


# Set when a trial's Tune actor imports this module: it unpickles trial_driver before Tune builds
# the Trainable. Changes nothing where IPython is loaded.
trainable_module.disable_ipython = _disable_ipython_if_loaded


class TuneReport(UserCallback):
    """Each report of the worker, to Tune, from the controller in this process: what Ray's
    TuneReportCallback sends through its queue actor (the metrics and the checkpoint's path; the
    checkpoint itself is Train's), sent without one."""

    def after_report(self, run_context, metrics, checkpoint):
        result = dict(metrics[0])
        if checkpoint:
            result[CHECKPOINT_PATH_KEY] = checkpoint.path
        ray.tune.report(result)


def train_env(cfg: ExperimentConfig, ahead: bool, local: bool) -> dict:
    """Ray Train's settings for each trial's run. `ahead`: some trials start before a slot is free
    (ecg_ray.tune.trials_ahead > 0), and their placement group waits for one as long as a trial
    runs: Train's wait for it, which would otherwise end in a retry with a traceback after
    resources.worker_start_timeout_s, is then at least AHEAD_WAIT_S. Without trials started
    ahead it is resources.worker_start_timeout_s, as configured."""
    timeout = max(cfg.resources.worker_start_timeout_s, AHEAD_WAIT_S) if ahead else cfg.resources.worker_start_timeout_s
    env = {WORKER_START_TIMEOUT_ENV: str(timeout), HEALTH_CHECK_ENV: str(HEALTH_CHECK_S), METRICS_ENV: "0"}
    if local:
        env[PREEMPTION_WATCHER_ENV] = "0"
    return env


def trial_driver(config: dict, data_box: list, exp: ExperimentDir, settings: RunSettings) -> None:
    """Tune trainable: run this grid point as a one-worker Ray Train run and forward its reports."""
    started = time.time()
    os.environ.update(settings.train_env)
    config = dict(config)
    key = config.pop(TRIAL_KEY)
    spec = WorkerSpec(
        trial=TrialConfig.from_dict(config),
        data_ref=data_box[0],  # the list kept the ObjectRef unresolved through with_parameters
        data_hash=settings.data_hash,
        threads=settings.threads,
        use_gpu=settings.use_gpu,
        driver_started=started,
    )
    trainer = TrialTrainer(
        train_loop_per_worker,
        autoscaler=settings.autoscaler,
        reuse_worker=settings.reuse_workers,
        train_loop_config={SPEC_KEY: spec},
        backend_config=ray.train.BackendConfig(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=settings.use_gpu, resources_per_worker=settings.resources_per_worker
        ),
        run_config=ray.train.RunConfig(
            # Named by the trial key, never a timestamp or Tune's trial id: a retried or resumed
            # trial finds its checkpoints.
            name=key,
            storage_path=exp.train_runs,
            callbacks=[TuneReport()],
            # Retries are Tune's (the trial restarts and this run resumes from its checkpoint), not
            # Ray Train's: a Train controller that is being stopped (ASHA, the end of a run) sees its
            # worker die first and, allowed to retry, starts a new worker group whose placement
            # group then outlives it, holding a CPU or GPU for the rest of the experiment.
            failure_config=ray.train.FailureConfig(max_failures=0),
            # The best epoch by val macro-F1 (for best_model.pt) and, always, the latest (to resume).
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=RANK_METRIC, checkpoint_score_order=RANK_MODE
            ),
            worker_runtime_env={"env_vars": {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE, **QUIET_ENV}},
            # Ray Train's own INFO lines on the console (every report's whole metrics dict, every
            # checkpoint, the worker group's start) would bury the one line per epoch ecg-ray
            # prints; they stay in Ray Train's log files.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    trainer.fit()


def train_loop_per_worker(config: dict) -> dict:
    """Ray Train entry point. `config`: {"spec": WorkerSpec}.

    Returns {REUSABLE: whether this process may run another trial} (ecg_ray.slots): not after
    `compile: true`, whose compiled-code caches would carry over into the next trial.
    """
    marks = [time.time()]  # the start-up's parts (schema.STARTUP_PARTS)
    # Ray Train logs every report's whole metrics dict at INFO to the root logger of the worker,
    # which it sends to the console: one line per epoch is ecg-ray's (its log files keep them all).
    logging.getLogger().setLevel(logging.WARNING)
    import ray.train.torch
    import torch

    from ecg_ray.train import TrialStopped, build_trial, check_checkpoint, checkpoint, load_state_dict, read_checkpoint, run_epoch

    marks.append(time.time())
    spec: WorkerSpec = config[SPEC_KEY]
    trial = TrialConfig.from_dict(asdict(spec.trial))  # checked again here, where it is used
    # A fixed thread count: CPU float reductions depend on it, so it is part of the determinism.
    torch.set_num_threads(spec.threads)
    data = ray.get(spec.data_ref)
    marks.append(time.time())
    if data.data_hash != spec.data_hash:
        raise RuntimeError(f"data in the object store has hash {data.data_hash}, the experiment expects {spec.data_hash}")
    device = ray.train.torch.get_device()  # the GPU Ray assigned (CUDA_VISIBLE_DEVICES), else the CPU
    if device.type == "cuda":
        torch.cuda.set_device(device)
    reset_peak_memory(device)  # this trial's peaks, in a process that may have run others before
    STOP.clear()  # a stop asked of this process's last trial (ecg_ray.slots.request_stop) is not this one's
    done = {REUSABLE: not trial.compile}
    state = build_trial(trial, data.weights, device)
    saved_checkpoint = ray.train.get_checkpoint()
    if saved_checkpoint:
        with saved_checkpoint.as_directory() as ckpt_dir:
            path = Path(ckpt_dir) / CHECKPOINT_FILE
            saved = read_checkpoint(path, map_location=device)
            check_checkpoint(saved, trial, data.data_hash, str(path))
            load_state_dict(state, saved)
        # The restored epoch's metrics once more: the run that saved this checkpoint may have been
        # stopped before Tune wrote that epoch down (a driver stopped or killed between the two),
        # and the history keeps an epoch's last report. After the last epoch it also ends the trial.
        ray.train.report(saved["metrics"])
        if state.epoch >= trial.epochs:
            return done
    node_id = ray.get_runtime_context().get_node_id()
    timing = {}
    if spec.driver_started:
        # A trial started ahead (ecg_ray.tune.trials_ahead) first waits for a free slot: that wait
        # is reported on its own, and start-up is the time spent starting.
        wait = slot_wait_s()
        marks = [spec.driver_started + wait, *marks, time.time()]
        timing = {"startup_s": marks[-1] - marks[0], **{k: b - a for k, a, b in zip(STARTUP_PARTS, marks, marks[1:])},
                  "startup_wait_s": wait}
    while state.epoch < trial.epochs:
        start = time.perf_counter()
        try:
            metrics = run_epoch(state, data, trial.batch_size, stop=STOP)
        except TrialStopped:  # Tune stopped the trial: nothing more to report
            return done
        metrics |= {
            "epoch_time_s": time.perf_counter() - start,
            "data_hash": data.data_hash,
            "node_id": node_id,
            "device": str(device),
            "worker_pid": os.getpid(),
            **timing,
            **peak_memory(device),
        }
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as ckpt_dir:
            torch.save(checkpoint(state, trial, data.data_hash, data.meta.settings, metrics), Path(ckpt_dir) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir))
        timing = {"checkpoint_s": time.perf_counter() - start}  # reported with the next epoch
    return done


def slot_wait_s() -> float:
    """Seconds this worker's placement group waited to be placed (for a free slot), from Ray's
    placement-group stats; 0.0 where Ray does not say."""
    pg = ray.util.get_current_placement_group()
    if pg is None:
        return 0.0
    stats = ray.util.placement_group_table(pg).get("stats") or {}
    return max(0.0, float(stats.get("end_to_end_creation_latency_ms", 0.0)) / 1000)


def prestart_train_services() -> None:
    """Start the cluster's one Ray Train autoscaling coordinator now, while the data is put and
    Tune sets up: every Train run's controller asks it for resources, and the first trials'
    start-up otherwise waits for its process (1.3 s on a 2-core machine). A detached actor that
    Ray Train would start anyway on a cluster (a local Ray's trials use NoAutoscaler instead); a
    Ray without it (another version) skips this."""
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        return
    get_or_create_autoscaling_coordinator()


def reset_peak_memory(device) -> None:
    """Start this process's peak resident memory and, on a GPU, its peak GPU memory afresh, so that
    peak_memory reports this trial's in a worker that ran others before (ecg_ray.slots).

    First the heap memory earlier trials freed goes back to the system: each trial runs in a thread
    of its own, and what it freed stays resident in that thread's malloc arena (glibc) otherwise,
    about 70 MB more after every trial of the seed grid. Then Linux's peak (VmHWM, which getrusage
    reports) restarts from the memory in use now."""
    import torch

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: the peak then spans the process's earlier trials
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> dict:
    """Peak resident memory of this worker process (and peak GPU memory on a GPU), in MiB."""
    import resource

    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
