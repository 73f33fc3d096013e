"""Each trial's slot: the placement group that holds its Ray Train worker's GPU or CPUs.

A trial's run records its worker's placement group in Ray's key-value store
(RecordPlacementGroup), and the Tune driver releases whatever is left of it when the trial
ends (release_placement_group): a placement group made by an actor outlives the actor.

On a local Ray whose trials do not start ahead (RunSettings.reuse_workers), a trial's Tune
actor keeps its finished worker, placement group and all, for the next trial Tune gives it
(ReusingController): that trial starts in a process that has imported torch and holds the
prepared data, instead of a new one. A worker is kept only after its run finished without an
error and the worker said its process is fit for another trial (train_loop_per_worker returns
REUSABLE); a run that fails or is stopped (ASHA) ends its worker as before. A kept worker is
let go when the Tune actor stops (Tune no longer needs it), when the next trial asks for other
resources, and, if the Tune actor died while holding one, by the next trial that needs a slot
(release_orphaned_slots).

Ray Train 2 has no public hook for this: ReusingWorkerGroup overrides three methods of its
WorkerGroup (pinned Ray; tests/test_slots.py checks what a reused worker runs and what is freed).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import ray
from ray._raylet import PlacementGroupID
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.experimental import internal_kv
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.train.v2._internal.execution.controller import TrainController
from ray.train.v2._internal.execution.worker_group.placement_group_handle import DefaultPlacementGroupHandle
from ray.train.v2._internal.execution.worker_group.worker import Worker
from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup
from ray.train.v2._internal.util import invoke_context_managers
from ray.tune.trainable import function_trainable
from ray.util.placement_group import PlacementGroup

KV_NAMESPACE = "ecg_ray"
IDLE = "idle-worker:"  # records of kept workers: IDLE + the Tune actor's id (trial keys never hold a ':')
REUSABLE = "reusable"  # the key of what train_loop_per_worker returns: may its process run another trial
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


STOP = threading.Event()  # in a Train worker: set when its trial is to end at the next batch


def request_stop() -> None:
    """Run in a trial's Train worker (Worker.execute_async) when Tune has stopped the trial: its
    loop ends at the next batch (ecg_ray.train.TrialStopped) and returns as a finished run does."""
    STOP.set()


class ReusingController(TrainController):
    """Ray Train's controller with a ReusingWorkerGroup."""

    worker_group_cls = ReusingWorkerGroup


def _release_kept_then(cleanup):
    """FunctionTrainable.cleanup, which Tune runs as it stops a Tune actor, preceded by letting go of
    the worker the actor kept."""

    def cleanup_releasing(self):
        release_kept()
        return cleanup(self)

    cleanup_releasing.releases_kept = True
    return cleanup_releasing


# Set when a trial's Tune actor imports this module (with ecg_ray.trial, as it unpickles the trainable).
if not getattr(function_trainable.FunctionTrainable.cleanup, "releases_kept", False):
    function_trainable.FunctionTrainable.cleanup = _release_kept_then(function_trainable.FunctionTrainable.cleanup)
