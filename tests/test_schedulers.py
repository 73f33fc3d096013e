"""The scheduler registry builds Ray's own ASHA from the experiment file."""

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ecg_ray.config import SchedulerConfig, load_experiment
from ecg_ray.tuning.schedulers import SCHEDULERS, build_scheduler


def test_seed_grid_asha_rungs_count_epochs():
    cfg = load_experiment("experiments/seed_grid.yaml")
    asha = build_scheduler(cfg.scheduler, cfg.epochs)
    assert isinstance(asha, ASHAScheduler)
    assert (asha._time_attr, asha._max_t, asha._reduction_factor) == ("epoch", 20, 2)
    assert len(asha._brackets) == 1
    assert [m for m, _ in asha._brackets[0]._rungs] == [16, 8, 4]  # grace_period 4, doubling up to 20


def test_asha_stops_a_strictly_worse_trial_at_a_rung():
    asha = build_scheduler(SchedulerConfig(grace_period=1, reduction_factor=2), max_epochs=4)
    bracket = asha._brackets[0]
    good, bad, tied = (SimpleNamespace(trial_id=t) for t in ("good", "bad", "tied"))
    assert bracket.on_result(good, 1, 0.40) == TrialScheduler.CONTINUE
    assert bracket.on_result(bad, 1, 0.19) == TrialScheduler.STOP
    assert bracket.on_result(tied, 1, 0.40) == TrialScheduler.CONTINUE  # as good as the best: goes on


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_builds(name):
    built = build_scheduler(SchedulerConfig(name=name), max_epochs=3)
    assert built is None if name == "none" else isinstance(built, TrialScheduler)


def test_grace_period_longer_than_the_run_is_capped():
    asha = build_scheduler(SchedulerConfig(grace_period=10), max_epochs=3)
    assert [m for m, _ in asha._brackets[0]._rungs] == [3]
