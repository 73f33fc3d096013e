"""Trials started ahead of a free slot (resources.trials_ahead): who gets them, and a real run that uses them."""

import pytest

from ecg_ray.config import load_experiment
from ecg_ray.errors import ConfigError
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.results.report import build_report
from ecg_ray.tuning import fast_path
from ecg_ray.tuning.trial import AHEAD_WAIT_S, train_env
from ecg_ray.tuning.resources import starts_ahead, trials_ahead
from helpers import tiny_experiment, tune_in_subprocess


@pytest.mark.parametrize("overrides, local, spare, expected", [
    ({}, True, 8, 4),  # auto: one per idle CPU (a GPU node: the GPU limits the trials), at most one per slot
    ({}, True, 3, 3),
    ({}, True, 0, 0),  # a CPU-only machine: every CPU trains
    ({"resources.trials_ahead": 2}, True, 0, 2),
    ({"resources.trials_ahead": 0}, True, 8, 0),
    ({}, False, 8, 0),  # a cluster starts every trial it can already
    ({"resources.max_concurrent_trials": 3}, True, 8, 0),  # the user said exactly how many run
    ({"resources.cpus_per_trial_driver": 0.5}, True, 8, 0),  # drivers started ahead would hold the workers' CPUs
])
def test_who_starts_trials_ahead(overrides, local, spare, expected):
    from ecg_ray.tuning._ray_internals import WORKER_START_TIMEOUT_ENV  # Train's knob: a private name

    cfg = load_experiment("experiments/quick.yaml", **overrides)
    assert trials_ahead(cfg, 4, local, spare) == expected
    # A trial started ahead waits for its slot as long as others train, not resources.worker_start_timeout_s;
    # with none started ahead, the configured timeout stands.
    timeout = float(train_env(cfg, expected > 0, local)[WORKER_START_TIMEOUT_ENV])
    assert timeout == (AHEAD_WAIT_S if expected else cfg.resources.worker_start_timeout_s)
    assert starts_ahead(cfg, local) == (local and not any(k in overrides for k in (
        "resources.max_concurrent_trials", "resources.cpus_per_trial_driver")) and overrides.get("resources.trials_ahead") != 0)


def test_on_an_untested_ray_trains_with_rays_defaults_and_starts_no_trial_ahead(monkeypatch):
    """Train's environment knobs are private names: only on a tested Ray are they set; elsewhere Ray's
    defaults hold, and no trial starts ahead (Train could not be told to wait for its slot)."""
    cfg = load_experiment("experiments/quick.yaml", **{"resources.trials_ahead": 2})
    assert train_env(cfg, True, True) and starts_ahead(cfg, True)
    monkeypatch.setattr(fast_path, "TESTED_RAY", ("0.0.1",))
    assert not fast_path.trusted()
    assert train_env(cfg, True, True) == {} and not starts_ahead(cfg, True) and trials_ahead(cfg, 4, True, 8) == 0


@pytest.mark.parametrize("overrides, message", [
    ({"resources.trials_ahead": -1}, "'resources.trials_ahead' parameter must be 'auto' or an integer >= 0. Got -1"),
    ({"resources.trials_ahead": "some"}, "'resources.trials_ahead' parameter must be 'auto' or an integer >= 0"),
    ({"resources.trials_ahead": 2, "resources.cpus_per_trial_driver": 1.0},
     "'resources.trials_ahead' parameter must be 0 or 'auto' while resources.cpus_per_trial_driver > 0"),
])
def test_bad_trials_ahead_is_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_experiment("experiments/quick.yaml", **overrides)


@pytest.mark.ray
def test_a_trial_started_ahead_waits_for_the_slot_and_reports_the_wait(tmp_path):
    """One CPU, so one slot; two trials: one trains while the other starts ahead, then takes the slot."""
    exp_file = tiny_experiment(tmp_path, "ahead", tmp_path, search={"lr": [0.001, 0.0005]},
                               data={"cache_dir": str(tmp_path / "cache")},
                               resources={"trials_ahead": 1})  # 'auto' starts none here: no CPU is idle
    from ecg_ray.tuning._ray_internals import WORKER_START_TIMEOUT_ENV

    tune_in_subprocess(exp_file, num_cpus=1)
    exp = ExperimentDir(str(tmp_path / "ahead"))
    (record,) = exp.read_runs()
    assert (record["concurrent_trials"], record["trials_ahead"]) == (1, 1)
    env = exp.read_record()["settings"]["train_env"]  # the recorded settings say how long Train waits for a slot
    assert float(env[WORKER_START_TIMEOUT_ENV]) == AHEAD_WAIT_S
    trials, hist = build_report(exp)
    assert len(trials) == 2 and len(hist) == 2  # every trial ran every epoch: no deadlock, nothing lost
    first = hist[hist["epoch"] == 1].set_index("trial_id")
    # One slot: a trial that started ahead waited for it, and its start-up excludes that wait.
    assert first["startup_wait_s"].max() > 1.0, first[["startup_s", "startup_wait_s"]]
    assert (first["startup_s"] < 60).all() and (first["startup_s"] > 0).all()
    # Each trial trained in its own Train worker.
    assert len({p["worker_pid"] for p in exp.read_progress()}) == 2
