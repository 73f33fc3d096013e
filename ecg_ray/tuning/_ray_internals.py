"""Every private Ray name ecg_ray uses, in one module: the fast path. Imported only when it runs.

    ecg-ray tune experiments/quick.yaml      # resources.fast_path: auto takes it on a tested Ray

Ray's public API runs a trial as a Tune function trainable whose Train run has a controller actor,
a synchronisation actor, a queue actor for TuneReportCallback and a placement-group cleaner actor
beside its worker, and a new worker process per trial (ecg_ray.tuning.trial, the public path). The
fast path makes a trial two processes, the Tune actor and its worker, and lets a Tune actor keep
its worker for its next trial:

- TrialTrainer: Ray Train's controller (TrainController, unchanged) runs in the trial's Tune actor
  and hands each report to Tune directly (TuneReport); no Ray Data callback, and instead of Train's
  placement-group cleaner the run records its placement group in the GCS's key-value store
  (RecordPlacementGroup) for the Tune driver to release (release_placement_group).
- SoloBarrier: the synchronisation actor of a worker group of one, answered in place.
- NoAutoscaler: no autoscaling-coordinator actor on a local Ray, which has no autoscaler.
- ReusingController / ReusingWorkerGroup: a worker that finished cleanly is kept (KeptWorker) for
  the Tune actor's next trial; a kept worker dies with its Tune actor (it is the actor's child), and
  the slot a dead actor held is freed by the next trial that needs one (release_orphaned_slots) and
  by the driver after the run.
- head_without_cluster_services, LOCAL_RAY_CONFIG: a local Ray without the autoscaler monitor, the
  dashboard head and idle prestarted workers.

Everything patched here is patched inside a `with` block around the run that needs it and put
back after it; importing this module changes nothing in Ray. PRIVATE_NAMES below lists every private
name used here, and ecg_ray.tuning.fast_path the Ray releases this module was tested with (TESTED_RAY); tests/test_fast_path.py checks both against the installed Ray, so an upgrade fails
there first, by name, and `fast_path: auto` falls back to the public path.
"""

from __future__ import annotations

# Every private name of Ray this module uses: module -> names in it (a dotted name is an attribute of a
# class: "WorkerGroup._clear_state"). A literal, before the imports: tests/test_fast_path.py reads it from
# this file's source without importing it, looks each name up in the installed Ray, and checks that
# the imports below use nothing private that is not listed.
PRIVATE_NAMES = {
    "ray._private.node": ("Node", "Node.start_monitor", "Node.start_api_server"),
    "ray._private.state": ("actors",),
    "ray._raylet": ("PlacementGroupID", "PlacementGroupID.from_hex"),
    "ray.experimental.internal_kv": ("_internal_kv_put", "_internal_kv_get", "_internal_kv_del", "_internal_kv_list"),
    "ray.train.v2._internal.callbacks.datasets": ("DatasetsCallback",),
    "ray.train.v2._internal.callbacks.placement_group_callback": ("PlacementGroupCleanerCallback",),
    "ray.train.v2._internal.execution.callback": ("WorkerGroupCallback", "WorkerGroupCallback.after_worker_group_start",
                           "WorkerGroupCallback.after_worker_group_shutdown", "WorkerGroupCallback.after_worker_group_abort"),
    "ray.train.v2._internal.execution.controller": ("TrainController", "TrainController.run", "TrainController.get_result",
                             "TrainController.worker_group_cls"),
    "ray.train.v2._internal.execution.scaling_policy.scaling_policy": ("TrainAutoscalingCoordinatorClient",),
    "ray.train.v2._internal.execution.worker_group.state": ("_shutdown_sync_actor",),
    "ray.train.v2._internal.execution.worker_group.worker_group": (
        "SynchronizationActor", "WorkerGroup", "WorkerGroup._create_placement_group", "WorkerGroup._create_workers",
        "WorkerGroup._assign_worker_ranks", "WorkerGroup._clear_state", "WorkerGroup.shutdown", "WorkerGroup.abort",
        "WorkerGroup.has_started", "WorkerGroup.get_latest_poll_status", "WorkerGroup.get_workers",
        "WorkerGroup.get_worker_group_state",
    ),
    "ray.train.v2._internal.execution.worker_group.placement_group_handle": ("DefaultPlacementGroupHandle", "DefaultPlacementGroupHandle.wait",
                                                      "DefaultPlacementGroupHandle.shutdown"),
    "ray.train.v2._internal.execution.worker_group.worker": ("Worker", "Worker.execute_async"),
    "ray.train.v2._internal.util": ("invoke_context_managers",),
    "ray.train.v2.api.callback": ("UserCallback", "UserCallback.after_report"),
    "ray.train.v2.api.data_parallel_trainer": ("DataParallelTrainer._create_default_callbacks",
                                                "DataParallelTrainer._initialize_and_run_controller"),
    "ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator": ("get_or_create_autoscaling_coordinator",),
}

import asyncio
import contextlib
import dataclasses
import time

import ray
from ray._private.node import Node
from ray._raylet import PlacementGroupID
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.experimental import internal_kv
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.train.v2._internal.execution.controller import TrainController
from ray.train.v2._internal.execution.scaling_policy import scaling_policy as scaling_policy_module
from ray.train.v2._internal.execution.worker_group import state as worker_group_state
from ray.train.v2._internal.execution.worker_group import worker_group as worker_group_module
from ray.train.v2._internal.execution.worker_group.placement_group_handle import DefaultPlacementGroupHandle
from ray.train.v2._internal.execution.worker_group.worker import Worker
from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup
from ray.train.v2._internal.util import invoke_context_managers
from ray.train.v2.api.callback import UserCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from ray.train.v2.api.result import Result
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.util.placement_group import PlacementGroup

from ecg_ray.tuning.worker_state import REUSABLE, STOP

# A local Ray starts no idle worker processes ahead (Ray's default: one per CPU as the driver
# connects). ecg-ray's first actors (the trials' Tune actors) are asked for before those processes
# are ready, so Ray starts processes for them anyway and the prestarted ones sat idle to the end:
# 0.3 s of a CPU each on a 2-core machine, for nothing. (`_system_config` is ray.init's private knob.)
LOCAL_RAY_CONFIG = {"prestart_worker_first_driver": False}


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


def start_local_ray(num_cpus: int) -> None:
    """ray.init of a fresh local Ray for the fast path: no dashboard (its placement groups are released
    by the driver, not by Train's State-API cleaner), none of the head's cluster services
    (head_without_cluster_services) and no idle prestarted workers (LOCAL_RAY_CONFIG, through ray.init's
    private `_system_config`)."""
    with head_without_cluster_services():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _system_config=LOCAL_RAY_CONFIG)


def head_without_cluster_services():
    """Start a local Ray without two head processes that serve a cluster, not one machine: the
    autoscaler's monitor (nothing to scale; its stop took 1.0 s of every run's end on 2 cores) and
    the dashboard's head process, which ray.init starts even with include_dashboard=False (HTTP
    server off, only usage-stats and metrics modules) and waits for (0.9 s of the start). Each is
    one of Ray's Node methods, skipped while this Ray starts; the GCS, the raylet and its agents
    start as usual. `ray start` (a cluster's nodes, --address) is untouched."""
    return swapped(Node, start_monitor=lambda self: None, start_api_server=lambda self, **kwargs: None)


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
    trial, and starts in one it kept (ReusingController).
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
def solo_barrier():
    """While a TrialTrainer's controller runs in this process (a trial's Tune actor): its worker group
    of one gets a SoloBarrier, not a SynchronizationActor. Two names in Ray Train's worker-group
    modules (tests/test_ray_tune.py checks that no SynchronizationActor starts)."""
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
    NoAutoscaler (one name in Ray Train's scaling-policy module; tests/test_ray_tune.py
    checks that no coordinator starts on a local Ray)."""
    with swapped(scaling_policy_module, TrainAutoscalingCoordinatorClient=NoAutoscaler):
        yield


class TuneReport(UserCallback):
    """Each report of the worker, to Tune, from the controller in this process: what Ray's
    TuneReportCallback sends through its queue actor (the metrics and the checkpoint's path; the
    checkpoint itself is Train's), sent without one."""

    def after_report(self, run_context, metrics, checkpoint):
        result = dict(metrics[0])
        if checkpoint:
            result[CHECKPOINT_PATH_KEY] = checkpoint.path
        ray.tune.report(result)


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


KV_NAMESPACE = "ecg_ray"
IDLE = "idle-worker:"  # records of kept workers: IDLE + the Tune actor's id (trial keys never hold a ':')
ALIVE_CHECK_S = 30.0  # how long a kept worker may take to answer before a new one replaces it
# How long a worker that Tune stopped may take to end (a batch, or a validation pass it is in)
# before it is killed instead of kept, and how often it is asked meanwhile.
STOP_WAIT_S, STOP_POLL_S = 60.0, 0.05
SWEEP_S = 5.0  # how often a trial waiting for its slot looks for slots that dead Tune actors held


def placement_group_key(trial_key: str) -> str:
    """Where a trial's run records its worker's placement group in the GCS's key-value store: per
    Ray job, so two experiments on one cluster (two jobs, the same trial keys) never meet."""
    return f"placement_group:{ray.get_runtime_context().get_job_id()}:{trial_key}"


def _record(key: str, pg: PlacementGroup) -> None:
    """Record `pg` under `key`, with the actor recording it (a trial's Tune actor)."""
    value = f"{pg.id.hex()} {ray.get_runtime_context().get_actor_id() or ''}"
    internal_kv._internal_kv_put(key, value, namespace=KV_NAMESPACE)


def _forget(key: str) -> None:
    internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)


def _release(key: str, unless_owner_alive: bool = False) -> None:
    """Remove the placement group recorded under `key`, and the record; with `unless_owner_alive`,
    only if the actor that recorded it has died."""
    recorded = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    if not recorded:
        return
    pg_hex, _, owner = recorded.decode().partition(" ")
    if unless_owner_alive and not _dead(owner):
        return
    ray.util.remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_hex)))
    _forget(key)


def _dead(actor_id: str) -> bool:
    """Whether the GCS says the actor has died ('' : no actor recorded it; not known to be dead)."""
    return bool(actor_id) and ray._private.state.actors(actor_id=actor_id).get("State") == "DEAD"


class RecordPlacementGroup(WorkerGroupCallback):
    """Record the worker's placement group under the trial's key while its worker group runs.

    A placement group made by an actor outlives it (Ray removes it only when the job ends too): if
    the trial's Tune actor dies without shutting its worker group down (Tune stopping it at once,
    a crash, its node lost), the group would hold its GPU or CPUs for the rest of the experiment.
    Once the group is shut down or aborted the record goes: its placement group is removed, or
    kept with its worker under the Tune actor's own record (ReusingWorkerGroup).
    """

    def __init__(self, trial_key: str):
        self.trial_key = trial_key

    def after_worker_group_start(self, worker_group) -> None:
        _record(placement_group_key(self.trial_key), worker_group.get_worker_group_state().placement_group_handle.placement_group)

    def after_worker_group_shutdown(self, worker_group_context) -> None:
        _forget(placement_group_key(self.trial_key))

    def after_worker_group_abort(self, worker_group_context) -> None:
        _forget(placement_group_key(self.trial_key))


def release_placement_group(trial_key: str, unless_owner_alive: bool = False) -> None:
    """Remove the placement group a trial's run recorded, if it is still there. The Tune driver calls
    this when Tune says the trial ended (finished, stopped early, failed): a run that shut its
    worker group down has no record left, and then this does nothing. With `unless_owner_alive`
    (workers are reused), a trial's Tune actor that is still alive ends or keeps the worker itself:
    Tune says a trial ended as soon as it stops it, while its actor still winds the run down."""
    _release(placement_group_key(trial_key), unless_owner_alive)


def release_orphaned_slots() -> None:
    """Free every placement group recorded by a Tune actor that has died since (killed while its
    worker was kept, or before its run was wound down): the worker died with it, but the placement
    group would hold its CPUs or GPU to the end of the job."""
    for key in internal_kv._internal_kv_list(placement_group_key(""), namespace=KV_NAMESPACE):
        _release(key.decode(), unless_owner_alive=True)


@dataclasses.dataclass
class KeptWorker:
    """A finished trial's Train worker, kept by its Tune actor for the actor's next trial."""

    worker: Worker  # its actor and what Train knows of it
    slot: object  # its placement group's handle (Train's PlacementGroupHandle), still placed
    resources: dict  # what the slot holds

    def release(self) -> None:
        """End the worker and free its slot."""
        ray.kill(self.worker.actor)
        self.slot.shutdown()
        _forget(_idle_key())


# In a trial's Tune actor: the worker its last trial left, recorded under _idle_key() from keep()
# until it is released or reused, so that a dead actor's slot can be found and freed.
_kept: KeptWorker | None = None


def _idle_key() -> str:
    return placement_group_key(IDLE + ray.get_runtime_context().get_actor_id())


def keep(kept: KeptWorker) -> None:
    """Hold `kept` for this Tune actor's next trial (recorded, so that it is freed if the actor dies)."""
    global _kept
    release_kept()
    _kept = kept
    _record(_idle_key(), kept.slot.placement_group)


def take_kept() -> KeptWorker | None:
    """The worker this Tune actor kept, now the caller's (None if it kept none)."""
    global _kept
    kept, _kept = _kept, None
    return kept


def release_kept() -> None:
    """Let go of the worker this Tune actor kept, if any."""
    kept = take_kept()
    if kept is not None:
        kept.release()


class SweepingPlacementGroupHandle(DefaultPlacementGroupHandle):
    """Train's placement-group handle, whose wait for the group to be placed frees the slots of dead
    Tune actors every SWEEP_S: a Tune actor that died holding a kept worker leaves a placement group
    that nothing else would free while this trial waits for its slot."""

    def wait(self, timeout_seconds: float = 30) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while not super().wait(min(SWEEP_S, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return False
            release_orphaned_slots()
        return True


class ReusingWorkerGroup(WorkerGroup):
    """Ray Train's worker group of one, which starts in the worker its Tune actor kept, when it kept one
    that holds the same resources, and keeps its worker when the run finishes cleanly."""

    _reuse: KeptWorker | None = None

    def _create_placement_group(self, scaling_config, worker_group_context):
        kept = take_kept()
        if kept is not None:
            if worker_group_context.num_workers == 1 and kept.resources == dict(worker_group_context.resources_per_worker):
                _forget(_idle_key())  # its slot is this run's now, recorded under the trial's key
                self._reuse = kept
                return kept.slot  # placed already: Train's wait for it returns at once
            kept.release()
        release_orphaned_slots()
        pg_handle = super()._create_placement_group(scaling_config, worker_group_context)
        if isinstance(pg_handle, DefaultPlacementGroupHandle):
            return SweepingPlacementGroupHandle(pg_handle.placement_group)
        return pg_handle

    def _create_workers(self, num_workers, placement_group, resources_per_worker, **kwargs):
        kept, self._reuse = self._reuse, None
        if kept is not None:
            try:
                metadata = ray.get(kept.worker.actor.get_metadata.remote(), timeout=ALIVE_CHECK_S)
            except (RayActorError, GetTimeoutError):  # it died or hangs while idle: a new one in its slot
                ray.kill(kept.worker.actor)
            else:
                worker = Worker(kept.worker.actor, metadata, resources_per_worker, placement_group_bundle_index=0)
                return WorkerGroup._assign_worker_ranks([worker], kwargs.get("starting_world_rank", 0),
                                                        kwargs.get("world_size"), kwargs.get("replica_group_size"))
        return super()._create_workers(num_workers, placement_group, resources_per_worker, **kwargs)

    def shutdown(self):
        """Train's WorkerGroup.shutdown, except that a worker that finished cleanly is kept."""
        if not (self.has_started() and reusable(self.get_latest_poll_status()) and self.keep_worker()):
            super().shutdown()

    def stop_and_keep(self) -> bool:
        """After Tune stopped the trial (ASHA, the end of the run, or its last epoch reported):
        ask the worker to stop at its next batch, wait until it has, and keep it if it ended
        cleanly. False where it did not (an error, no answer): then abort the group."""
        if not self.has_started():
            return False
        (worker,) = self.get_workers()
        try:
            ray.get(worker.execute_async(request_stop), timeout=STOP_WAIT_S)
            deadline = time.monotonic() + STOP_WAIT_S
            while True:  # each poll also takes a report the worker may still send; nobody reads it now
                status = ray.get(worker.actor.poll_status.remote(), timeout=STOP_WAIT_S)
                if not status.running:
                    break
                if time.monotonic() > deadline:
                    return False
                time.sleep(STOP_POLL_S)
        except RayError:
            return False
        return _ended_reusable(status) and self.keep_worker()

    def keep_worker(self) -> bool:
        """Train's WorkerGroup.shutdown without killing the worker or removing its placement group,
        which are kept for this Tune actor's next trial (its callbacks' shutdown hooks still run,
        the worker's first). False, with nothing done, where the worker does not answer."""
        state = self.get_worker_group_state()
        (worker,) = state.workers
        try:
            ray.get(worker.actor.shutdown.remote(), timeout=STOP_WAIT_S)
        except RayError:
            return False
        with invoke_context_managers([callback.on_worker_group_shutdown for callback in self._callbacks]):
            for callback in self._callbacks:
                callback.before_worker_group_shutdown(self)
            self._clear_state()
            for callback in self._callbacks:
                callback.after_worker_group_shutdown(self._worker_group_context)
        keep(KeptWorker(worker, state.placement_group_handle, dict(self._worker_group_context.resources_per_worker)))
        return True


def reusable(status) -> bool:
    """Whether a worker group's last poll says: one worker, finished, no error, and it returned
    {REUSABLE: True}."""
    return status is not None and len(status.worker_statuses) == 1 and _ended_reusable(*status.worker_statuses.values())


def _ended_reusable(worker_status) -> bool:
    """Whether one worker's poll says: no longer running, no error, and it returned {REUSABLE: True}."""
    value = worker_status.return_value
    return not worker_status.running and worker_status.error is None and isinstance(value, dict) and value.get(REUSABLE) is True


def request_stop() -> None:
    """Run in a trial's Train worker (Worker.execute_async) when Tune has stopped the trial: its
    loop ends at the next batch (ecg_ray.training.loop.TrialStopped) and returns as a finished run does."""
    STOP.set()


class ReusingController(TrainController):
    """Ray Train's controller with a ReusingWorkerGroup."""

    worker_group_cls = ReusingWorkerGroup


# --- Ray's private settings: Train's environment knobs, its autoscaling actor, a stats field -------
# Used on both paths, but only where this module imports (a tested Ray: ecg_ray.tuning.fast_path.
# internals); elsewhere Ray's defaults hold. The knobs are read by Ray Train's internals
# (ray/train/v2/_internal/constants.py) where fit() is called (the trial driver), which copies them
# to its controller. How long Train waits for its worker's placement group before it gives it up
# and asks again:
WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
# How often the controller polls its worker, which is also how soon it sees a report and the
# end of the run: Ray's 2 s made every trial's first report and its end wait up to 2 s more.
HEALTH_CHECK_ENV, HEALTH_CHECK_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 0.2
# An actor per run that watches for node drains (spot preemption); a local Ray is never drained.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Ray Train's Prometheus metrics of each run; the report has its own.
METRICS_ENV = "RAY_TRAIN_METRICS_ENABLED"
# In the worker: Train's patch of print(), which would prefix every line the loop prints.
WORKER_QUIET_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
# Ray Train's autoscaling coordinator: a detached actor of its own name and namespace.
COORDINATOR = "AutoscalingCoordinator"


def train_env(worker_start_timeout_s: float, local: bool) -> dict:
    """The knobs above for each trial's Train run: its wait for a worker, a faster poll, no metrics,
    and on a local Ray no preemption watcher."""
    env = {WORKER_START_TIMEOUT_ENV: str(worker_start_timeout_s), HEALTH_CHECK_ENV: str(HEALTH_CHECK_S), METRICS_ENV: "0"}
    if local:
        env[PREEMPTION_WATCHER_ENV] = "0"
    return env


def release_autoscaling_coordinator() -> None:
    """End Train's autoscaling coordinator and clear its standing resource request.

    Each Train run asks that actor for its worker's resources. The request can outlive the run
    by minutes, and the detached actor itself lives on the node of the first trial, so that node
    is never idle (ray-project/ray#58481). The next Train run creates a fresh coordinator.
    """
    import ray.autoscaler.sdk

    try:
        coordinator = ray.get_actor(COORDINATOR, namespace=COORDINATOR)
    except ValueError:
        return  # no Train run asked for resources through it
    ray.kill(coordinator, no_restart=True)
    ray.autoscaler.sdk.request_resources(bundles=[])


def placement_group_wait_s() -> float:
    """Seconds this worker's placement group waited to be placed, from the GCS's placement-group
    stats (a field of ray.util.placement_group_table's answer that Ray does not document); 0.0
    where there is none."""
    pg = ray.util.get_current_placement_group()
    if pg is None:
        return 0.0
    stats = ray.util.placement_group_table(pg).get("stats") or {}
    return max(0.0, float(stats.get("end_to_end_creation_latency_ms", 0.0)) / 1000)
