"""`search.algorithm: optuna`: Optuna's TPE through Ray Tune's OptunaSearch, in batches that make it
reproducible for a seed whatever the timing, and resumable from the experiment folder alone."""

import json
import shutil

import pytest
import yaml

from ecg_ray.config import TrialConfig, experiment_from_dict
from ecg_ray.results.store.folder import ExperimentDir, write_json
from ecg_ray.tuning.optuna_search import suggest_batch
from ecg_ray.tuning.searchers import BatchedSearcher
from helpers import live_placement_groups

pytest.importorskip("optuna")

SPACE = {"algorithm": "optuna", "num_samples": 5, "suggest_batch": 2, "lr": {"loguniform": [1e-4, 3e-3]},
         "dropout": {"uniform": [0.0, 0.5]}, "hidden_size": {"choice": [128, 256]}, "epochs": {"randint": [5, 10]},
         "weight_decay": {"quniform": [0.0, 0.001, 0.0002]}, "warmup_epochs": {"choice": [0, 7]}}


def _space(seed=42, **top):
    return experiment_from_dict({"search": SPACE, "seed": seed, **top}).search_space


def _draws(n, offset=0.0):
    return [({"lr": 1e-3, "dropout": 0.04 * i, "hidden_size": 128, "epochs": 6 + i % 3, "weight_decay": 0.0, "warmup_epochs": 0},
             0.3 + offset + 0.01 * i) for i in range(n)]


def test_suggestions_are_reproducible_for_a_seed_valid_distinct_and_learn_from_results():
    space = _space()
    first = suggest_batch(space, 42, 0, 4, [])
    assert first == suggest_batch(space, 42, 0, 4, [])  # a pure function of seed, batch and results
    assert first != suggest_batch(space, 43, 0, 4, []) and first != suggest_batch(space, 42, 1, 4, [])
    history = _draws(12)
    later = suggest_batch(space, 42, 3, 6, history)
    assert later == suggest_batch(space, 42, 3, 6, list(history))
    assert later != suggest_batch(space, 42, 3, 6, _draws(12, offset=0.2)[::-1])  # other results, other suggestions
    seen = [tuple(sorted(d.items())) for d, _ in history]
    for draw in first + later:
        assert tuple(sorted(draw.items())) not in seen  # never a config already tried
        seen.append(tuple(sorted(draw.items())))
        t = TrialConfig(**draw)  # each a valid trial: warm-up 7 only where the epochs drawn allow it
        assert 1e-4 <= t.lr <= 3e-3 and 0.0 <= t.dropout <= 0.5 and t.hidden_size in (128, 256)
        assert isinstance(t.epochs, int) and 5 <= t.epochs < 10 and t.warmup_epochs < t.epochs
        assert round(t.weight_decay / 0.0002, 6).is_integer() and 0.0 <= t.weight_decay <= 0.001


def test_a_batch_waits_for_the_last_one_and_a_resume_suggests_what_the_first_run_did(tmp_path):
    cfg = experiment_from_dict({"search": SPACE, "repeats": 2, "storage_path": str(tmp_path), "name": "o"})
    space, exp = cfg.search_space, ExperimentDir.for_config(cfg)
    assert cfg.n_trials == 10 and cfg.epochs == 9  # 5 suggestions x 2 seeds; randint's high is exclusive
    write_json(exp.experiment_file, {"config": cfg.to_dict(), "grid": [], "trial_keys": []})

    searcher = BatchedSearcher(space, 42, exp)
    batch0 = [searcher.suggest(f"r{i}") for i in range(4)]  # 2 configs x seeds 42 and 43
    assert [c["trial_key"] for c in batch0] == ["t0000", "t0001", "t0002", "t0003"]
    assert [c["seed"] for c in batch0] == [42, 43, 42, 43] and batch0[0]["lr"] == batch0[1]["lr"]
    assert searcher.suggest("r4") is None  # batch 1 waits for all of batch 0
    for i, value in enumerate([0.2, 0.4, 0.5, 0.7]):
        searcher.on_trial_result(f"r{i}", {"val_macro_f1": value, "training_iteration": 1})
        searcher.on_trial_complete(f"r{i}", {"val_macro_f1": value - 0.1})  # the best epoch counts, not the last
    assert [v for _, v in searcher.history()] == pytest.approx([0.3, 0.6])  # the mean over seeds
    batch1 = [searcher.suggest(f"r{i}") for i in range(4, 8)]
    assert [c["trial_key"] for c in batch1] == ["t0004", "t0005", "t0006", "t0007"]
    assert list(exp.recorded_trials()) == [f"t{i:04d}" for i in range(8)]  # recorded before they start

    # A crash now: a new searcher built from the folder (as `--resume` builds it) runs batch 1 again
    # with the same configs, then suggests the same last batch as the first searcher.
    resumed = BatchedSearcher(space, 42, exp, exp.recorded_trials(), {f"t{i:04d}": v for i, v in enumerate([0.2, 0.4, 0.5, 0.7])},
                            rerun=["t0004", "t0005", "t0006", "t0007"])
    again = [resumed.suggest(f"x{i}") for i in range(4)]
    assert again == batch1
    for i in range(4):
        searcher.on_trial_complete(f"r{4 + i}", {"val_macro_f1": 0.1 * i})
        resumed.on_trial_complete(f"x{i}", {"val_macro_f1": 0.1 * i})
    last = [searcher.suggest("r8"), searcher.suggest("r9")]
    assert [resumed.suggest("x4"), resumed.suggest("x5")] == last  # the 5th suggestion: one config x 2 seeds
    assert searcher.suggest("r10") is resumed.suggest("x6") is BatchedSearcher.FINISHED
    configs = [tuple((k, v) for k, v in c.items() if k not in ("trial_key", "seed")) for c in batch0 + batch1 + last]
    assert len(set(configs)) == 5  # no config twice


@pytest.mark.ray
def test_an_optuna_search_runs_under_asha_and_resumes_without_repeating_a_config(ray_local, tmp_path):
    import pandas as pd

    from ecg_ray.commands.main import main

    search = {"algorithm": "optuna", "num_samples": 4, "suggest_batch": 2, "lr": {"loguniform": [5e-4, 3e-3]},
              "dropout": {"uniform": [0.0, 0.5]}, "hidden_size": 16, "epochs": 2}
    raw = {"name": "opt", "storage_path": str(tmp_path), "data": {"n_records": 160}, "search": search,
           "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}}
    (tmp_path / "opt.yaml").write_text(yaml.safe_dump(raw))
    assert main(["tune", str(tmp_path / "opt.yaml"), "--format", "csv"]) == 0
    folder = tmp_path / "opt"
    record = json.loads((folder / "ecg_ray_experiment.json").read_text())
    assert record["trial_keys"] == ["t0000", "t0001", "t0002", "t0003"]
    trials = pd.read_csv(folder / "report" / "trials.csv").sort_values("trial_id")
    assert trials["lr"].tolist() == [g["lr"] for g in record["grid"]] and trials["lr"].nunique() == 4
    # What the run suggested is what the seed and the results give.
    space, status = experiment_from_dict({"search": search}).search_space, json.loads((folder / "trial_status.json").read_text())
    draws = [({"lr": g["lr"], "dropout": g["dropout"]}, status[k]["best"]) for k, g in zip(record["trial_keys"], record["grid"])]
    assert [d for d, _ in draws[:2]] == suggest_batch(space, 42, 0, 2, [])
    assert [d for d, _ in draws[2:]] == suggest_batch(space, 42, 1, 2, draws[:2])

    # Crash right after batch 0: batch 1 unrecorded, its trials never run. --resume suggests it again.
    record["trial_keys"], record["grid"] = record["trial_keys"][:2], record["grid"][:2]
    (folder / "ecg_ray_experiment.json").write_text(json.dumps(record))
    (folder / "trial_status.json").write_text(json.dumps({k: status[k] for k in ("t0000", "t0001")}))
    for key in ("t0002", "t0003"):
        shutil.rmtree(folder / "train_runs" / key)
    assert main(["tune", "--resume", str(folder), "--format", "csv"]) == 0
    resumed = json.loads((folder / "ecg_ray_experiment.json").read_text())
    assert resumed["grid"][:2] == record["grid"] and len(resumed["grid"]) == 4
    assert [{"lr": g["lr"], "dropout": g["dropout"]} for g in resumed["grid"][2:]] == [d for d, _ in draws[2:]]
    again = pd.read_csv(folder / "report" / "trials.csv").sort_values("trial_id")
    assert again["trial_id"].tolist() == ["t0000", "t0001", "t0002", "t0003"]
    assert again["best_val_macro_f1"].tolist() == trials["best_val_macro_f1"].tolist()  # bit for bit on CPU
    assert live_placement_groups(ray_local) == []  # no trial, stopped by ASHA or not, left its resources held


def test_a_second_searcher_is_one_module_and_its_name(tmp_path, monkeypatch):
    """tests/searcher_example.py (local search around the best draw) registered by name: the experiment file
    names it, and ecg_ray's batched searcher runs, records and resumes it as it does Optuna's."""
    from ecg_ray.config import constraints
    from ecg_ray.errors import ConfigError

    monkeypatch.setitem(constraints.ADAPTIVE_SEARCHERS, "local", "searcher_example")
    search = {"algorithm": "local", "num_samples": 4, "suggest_batch": 2, "lr": {"uniform": [1e-4, 3e-3]},
              "dropout": {"uniform": [0.0, 0.5]}}
    cfg = experiment_from_dict({"search": search, "storage_path": str(tmp_path), "name": "l"})
    space, exp = cfg.search_space, ExperimentDir.for_config(cfg)
    assert space.adaptive and cfg.n_trials == 4
    write_json(exp.experiment_file, {"config": cfg.to_dict(), "grid": [], "trial_keys": []})
    searcher = BatchedSearcher(space, 42, exp)
    first = [searcher.suggest(f"r{i}") for i in range(2)]
    assert searcher.suggest("r2") is None  # the next batch waits for this one
    for i, value in enumerate([0.3, 0.6]):
        searcher.on_trial_complete(f"r{i}", {"val_macro_f1": value})
    second = [searcher.suggest(f"r{i}") for i in range(2, 4)]
    best = first[1]
    for trial in second:  # around the best draw so far: within a tenth of each range
        assert abs(trial["lr"] - best["lr"]) <= (3e-3 - 1e-4) / 10 + 1e-9 and abs(trial["dropout"] - best["dropout"]) <= 0.05 + 1e-9
    assert list(exp.recorded_trials()) == ["t0000", "t0001", "t0002", "t0003"]
    resumed = BatchedSearcher(space, 42, exp, exp.recorded_trials(), {"t0000": 0.3, "t0001": 0.6}, rerun=["t0002", "t0003"])
    assert [resumed.suggest(f"x{i}") for i in range(2)] == second
    with pytest.raises(ConfigError, match="search.algorithm 'nope' is not an adaptive searcher; those are: optuna, local"):
        from ecg_ray.tuning.searchers import searcher_module

        searcher_module("nope")
    with pytest.raises(ConfigError, match="The 'search.algorithm' parameter must be one of"):
        experiment_from_dict({"search": {**search, "algorithm": "nope"}})
