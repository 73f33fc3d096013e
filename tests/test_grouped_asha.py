"""Grouped ASHA: a config's seeds and folds stop together, by their mean at each rung, with the same
decisions whatever order the trials report in (scripted sequences, then a real run on Ray)."""

import itertools
import random

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from ecg_ray.config import SchedulerConfig, experiment_from_dict
from ecg_ray.errors import ConfigError
from ecg_ray.results.analysis.rungs import group_of, plan, rung_epochs
from ecg_ray.tuning.schedulers import ConfigGroups, build_scheduler

# Three configs x two seeds. Config B's seeds straddle A's (one lucky, one not): per-trial ASHA keeps
# the lucky one and drops the other; grouped ASHA compares B's mean. C is the worst at epoch 1.
SCORES = {  # (lr, seed) -> val macro-F1 by epoch
    (1e-3, 42): [0.40, 0.50, 0.55, 0.56], (1e-3, 43): [0.42, 0.52, 0.54, 0.57],
    (5e-4, 42): [0.48, 0.56, 0.60, 0.61], (5e-4, 43): [0.30, 0.44, 0.50, 0.52],
    (2e-4, 42): [0.20, 0.30, 0.35, 0.40], (2e-4, 43): [0.22, 0.31, 0.36, 0.41],
}


def _trials():
    out = {}
    for i, (lr, seed) in enumerate(SCORES):
        out[f"t{i:04d}"] = {"trial_key": f"t{i:04d}", "lr": lr, "seed": seed, "fold": None, "epochs": 4}
    return out


def _reports(order_seed: int):
    """Every (trial key, epoch) report, each trial's epochs in order, the trials interleaved at random."""
    rng = random.Random(order_seed)
    queues = {k: [(k, e + 1) for e in range(4)] for k in _trials()}
    out = []
    while queues:
        key = rng.choice(sorted(queues))
        out.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    return out


def _run(order_seed: int):
    """Feed the scheduler a scripted sequence; returns (final plan, the epoch each trial was told to stop at)."""
    sched = build_scheduler(SchedulerConfig(grace_period=1, reduction_factor=2), 4, ConfigGroups(_trials(), size=2))
    trials = {k: Trial("__fake", config=c, trial_id=k, stub=True) for k, c in _trials().items()}
    for t in trials.values():
        sched.on_trial_add(None, t)
    told = {}
    for key, epoch in _reports(order_seed):
        if key in told:
            continue  # stopped: it reports no more
        config = trials[key].config
        action = sched.on_trial_result(None, trials[key], {"epoch": epoch, "val_macro_f1": SCORES[(config["lr"], config["seed"])][epoch - 1]})
        if action == TrialScheduler.STOP:
            told[key] = epoch
    return sched._plan(), told


def test_rungs_are_asha_rungs_below_the_last_epoch():
    assert rung_epochs(1, 2, 20) == [1, 2, 4, 8, 16] and rung_epochs(4, 2, 20) == [4, 8, 16] and rung_epochs(5, 2, 5) == []


def test_a_config_stops_as_a_group_by_its_mean_the_same_in_every_order():
    stops = [_run(seed) for seed in range(12)]
    plans = {str(sorted(p.items())) for p, _ in stops}
    assert len(plans) == 1  # the same decisions, whatever the interleaving
    final, _ = stops[0]
    by_lr = {c["lr"]: group_of(c) for c in _trials().values()}
    # C (2e-4) is below A's mean at epoch 1; B (5e-4: mean 0.39 at epoch 1, 0.50 at 2) is below A at epoch 1 too.
    assert final == {by_lr[2e-4]: 1, by_lr[5e-4]: 1}
    for _, told in stops:
        for key, epoch in told.items():
            assert group_of(_trials()[key]) in final and epoch >= final[group_of(_trials()[key])]
        assert not any(_trials()[k]["lr"] == 1e-3 for k in told)  # the first config is never stopped


def test_plan_waits_for_every_trial_of_a_config_and_for_the_configs_before_it():
    members = {"A": ["t0", "t1"], "B": ["t2", "t3"]}
    partial = {"t0": {1: 0.5}, "t2": {1: 0.1}, "t3": {1: 0.1}}  # A's second seed has not reported: B must wait
    assert plan(["A", "B"], members, partial, [1], 2) == {}
    assert plan(["A", "B"], members, partial | {"t1": {1: 0.5}}, [1], 2) == {"B": 1}
    assert plan(["A", "B"], members, partial | {"t1": {1: 0.5}}, [1], 2, failed={"t0", "t1"}) == {}  # A failed: B is first
    assert plan(["A", "B"], {"A": ["t0"], "B": ["t2", "t3"]}, partial, [1], 2, size=2) == {}  # A's second trial not made yet


def test_the_group_is_config_by_default_with_seeds_or_folds_and_trial_alone():
    assert experiment_from_dict({"repeats": 3}).groups_trials
    assert experiment_from_dict({"data": {"folds": 3}}).groups_trials
    assert not experiment_from_dict({}).groups_trials  # one trial per config: Ray Tune's ASHA as before
    assert not experiment_from_dict({"repeats": 3, "scheduler": {"group": "trial"}}).groups_trials
    with pytest.raises(ConfigError, match="scheduler.group"):
        experiment_from_dict({"data": {"folds": 3}, "scheduler": {"group": "trial"}})
    with pytest.raises(ConfigError, match="scheduler.group"):
        experiment_from_dict({"scheduler": {"group": "seeds"}})


@pytest.mark.ray
def test_a_real_grouped_asha_run_stops_both_seeds_of_a_config_at_the_same_rung(ray_local, tmp_path):
    import pandas as pd

    from ecg_ray.commands.main import main
    from helpers import tiny_experiment

    exp_file = tiny_experiment(tmp_path, "grouped", tmp_path, search={"lr": [0.003, 0.0001], "epochs": 3},
                               scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
                               data={"n_records": 200}, resources={"max_concurrent_trials": 1})
    raw = __import__("yaml").safe_load(exp_file.read_text()) | {"repeats": 2}
    exp_file.write_text(__import__("yaml").safe_dump(raw))
    assert main(["tune", str(exp_file), "--format", "csv"]) == 0
    trials = pd.read_csv(tmp_path / "grouped" / "report" / "trials.csv")
    for _, g in trials.groupby("lr"):
        assert g["epochs_run"].nunique() == 1 and g["early_stopped"].nunique() == 1  # the seeds together
    first = trials[trials["lr"] == 0.003]  # the first config in the experiment's order: never stopped
    assert (first["epochs_run"] == 3).all() and not first["early_stopped"].any()
    assert len(trials[trials["early_stopped"]]) in (0, 2)  # a config stops with both its seeds or not at all
