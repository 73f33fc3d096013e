"""On the fast path, a trial's Tune actor keeps its finished Train worker for its next trial
(ecg_ray.tuning._ray_internals), and every slot is freed: the kept worker dies with its Tune actor, and
the slot it held is freed by the next trial that needs one.
Real local Rays: `ecg-ray tune` in a subprocess (a Ray of its own), and the test session's."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import fast_path_only

from ecg_ray.config import TrialConfig, load_experiment
from ecg_ray.data.prepare import prepare
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.results.report import build_report
from ecg_ray.schema import RUN_COLUMNS, TIMING_KEYS
from ecg_ray.training.loop import TrialStopped, build_trial, run_epoch

def _numbers(exp: ExperimentDir):
    """The history without what says where, when and how fast each epoch ran."""
    hist = build_report(exp)[1]
    return hist.drop(columns=[c for c in [*RUN_COLUMNS, *TIMING_KEYS, "time_total_s"] if c in hist.columns])


@pytest.mark.ray
@fast_path_only()
def test_trials_in_turn_run_in_one_kept_worker_with_the_numbers_of_fresh_ones(asha_in_turn):
    """conftest.ASHA_IN_TURN: four trials one after another on one Tune actor; ASHA stops each while its
    worker runs: after its last epoch, or, the last (lr 0.0001, SGD), mid-way. The fresh workers are
    the same grid's on Ray's public API (a new worker per trial), which test_fast_path also runs; the
    fast path without kept workers runs wherever trials start ahead or a cluster has an autoscaler
    (test_trials_ahead, test_autoscaler)."""
    (kept, _), (fresh, _) = asha_in_turn("kept"), asha_in_turn("public")
    kept_progress, fresh_progress = kept.read_progress(), fresh.read_progress()
    assert kept.read_record()["settings"]["reuse_workers"] is True
    assert fresh.read_record()["settings"]["reuse_workers"] is False
    # Every trial of the run, finished or stopped by ASHA mid-way, ran in the one worker process;
    # without reuse each had its own.
    assert len({p["trial_id"] for p in kept_progress}) == 4
    assert len({p["worker_pid"] for p in kept_progress}) == 1
    assert len({p["worker_pid"] for p in fresh_progress}) == 4
    trials = build_report(kept)[0]
    assert (trials["status"] == "TERMINATED").all()
    assert sorted(trials["epochs_run"]) == [1, 2, 2, 2]  # ASHA stopped one after its first epoch
    # A process that ran other trials first gives the same numbers, bit for bit.
    assert _numbers(kept).equals(_numbers(fresh))


def test_a_set_stop_event_ends_the_epoch_before_its_next_batch():
    cfg = load_experiment("experiments/quick.yaml", **{"data.n_records": 120})
    data = prepare(cfg)
    torch.set_num_threads(1)
    trial = TrialConfig(hidden_size=16)
    stop = threading.Event()
    unset = run_epoch(build_trial(trial, data.weights), data, 32, stop=stop)
    assert unset == run_epoch(build_trial(trial, data.weights), data, 32)  # an event never set changes nothing
    state = build_trial(trial, data.weights)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    stop.set()
    with pytest.raises(TrialStopped, match="stopped during epoch 1"):
        run_epoch(state, data, 32, stop=stop)
    assert all(torch.equal(before[k], v) for k, v in state.model.state_dict().items())  # not one step taken
    assert state.epoch == 0


@fast_path_only()
def test_only_a_clean_finish_that_says_so_keeps_a_worker():
    from ray.train.v2._internal.execution.worker_group.poll import WorkerGroupPollStatus, WorkerStatus

    from ecg_ray.tuning._ray_internals import reusable
    from ecg_ray.tuning.worker import REUSABLE

    def status(*workers):
        return WorkerGroupPollStatus({rank: w for rank, w in enumerate(workers)})

    assert reusable(status(WorkerStatus(running=False, return_value={REUSABLE: True})))
    assert not reusable(None)
    assert not reusable(status(WorkerStatus(running=True)))  # still training
    assert not reusable(status(WorkerStatus(running=False, error=RuntimeError("x"), return_value={REUSABLE: True})))
    assert not reusable(status(WorkerStatus(running=False, return_value={REUSABLE: False})))  # compile: true
    assert not reusable(status(WorkerStatus(running=False, return_value=None)))
    two = WorkerStatus(running=False, return_value={REUSABLE: True})
    assert not reusable(status(two, two))  # groups of one only


def test_a_kept_worker_dies_with_the_tune_actor_that_kept_it(ray_local):
    """A kept worker is an actor its Tune actor created (Train's controller runs there), so Ray ends it
    when the Tune actor stops, as Tune stops an actor it no longer needs (__ray_terminate__); nothing in
    Tune is patched for it. Its slot is then a dead actor's, which release_orphaned_slots frees."""
    import ray

    @ray.remote(num_cpus=0)
    class Child:
        def pid(self):
            import os

            return os.getpid()

    @ray.remote(num_cpus=0)
    class Owner:
        def start(self):
            self.child = Child.remote()
            return self.child

    owner = Owner.remote()
    child = ray.get(owner.start.remote())
    assert ray.get(child.pid.remote()) > 0
    owner.__ray_terminate__.remote()
    with pytest.raises(ray.exceptions.RayActorError):
        for _ in range(60):
            ray.get(child.pid.remote(), timeout=10)
            import time

            time.sleep(0.5)


@fast_path_only()
def test_slots_of_dead_tune_actors_are_freed_and_live_ones_left(ray_local):
    """Two actors record a placement group each as a Tune actor does (a kept worker's, a running
    trial's); one dies. The sweep frees the dead one's; the driver's release spares the live one's
    with reuse on (it winds its run down itself) and frees it without."""
    import ray
    from ray.util.placement_group import placement_group

    from ecg_ray.tuning import _ray_internals as slots

    @ray.remote(num_cpus=0)
    class Recorder:
        def record(self, key: str) -> str:
            pg = placement_group([{"CPU": 0.01}])
            ray.get(pg.ready())
            slots._record(key, pg)
            return pg.id.hex()

    def state(pg_hex: str) -> str:
        return ray.util.placement_group_table()[pg_hex]["state"]

    dead, live = Recorder.remote(), Recorder.remote()
    dead_pg = ray.get(dead.record.remote(slots.placement_group_key(slots.IDLE + "x")))
    live_pg = ray.get(live.record.remote(slots.placement_group_key("t0042")))
    ray.kill(dead)
    assert state(dead_pg) == "CREATED"  # a placement group outlives the actor that made it
    slots.release_orphaned_slots()
    assert state(dead_pg) == "REMOVED" and state(live_pg) == "CREATED"
    slots.release_placement_group("t0042", unless_owner_alive=True)
    assert state(live_pg) == "CREATED"
    slots.release_placement_group("t0042")
    assert state(live_pg) == "REMOVED"
    ray.kill(live)


@fast_path_only()
def test_a_trial_waiting_for_its_slot_frees_the_one_a_dead_tune_actor_held(ray_local, monkeypatch):
    """A Tune actor dies holding the only free slot (a kept worker's placement group): the next
    trial's wait for its own placement group frees it, instead of waiting out its timeout."""
    import ray
    from ray.util.placement_group import placement_group

    from ecg_ray.tuning import _ray_internals as slots

    monkeypatch.setattr(slots, "SWEEP_S", 0.5)
    free = ray.available_resources()["CPU"]

    @ray.remote(num_cpus=0)
    class Holder:
        def hold(self) -> str:
            pg = placement_group([{"CPU": free}])
            ray.get(pg.ready())
            slots._record(slots.placement_group_key(slots.IDLE + "holder"), pg)
            return pg.id.hex()

    holder = Holder.remote()
    held = ray.get(holder.hold.remote())
    ray.kill(holder)
    waiting = slots.SweepingPlacementGroupHandle(placement_group([{"CPU": free}]))
    try:
        assert waiting.wait(60)
        assert ray.util.placement_group_table()[held]["state"] == "REMOVED"
    finally:
        waiting.shutdown()
