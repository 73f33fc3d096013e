"""K-fold cross-validation: the folds (stratified, disjoint, covering the pool, the test split outside),
each fold trial equal bit for bit to that fold run alone, tables over folds paired by (seed, fold),
out-of-fold metrics equal to a recomputation from the saved predictions, and every bad combination
refused before any trial."""

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score

from ecg_ray.commands.main import main
from ecg_ray.config import TrialConfig, experiment_from_dict, load_experiment
from ecg_ray.data.prepare import fold_view, prepare
from ecg_ray.errors import ConfigError, DataError
from ecg_ray.results.tables.export import configs_to_latex
from ecg_ray.results.tables.ranking import rank_configs, seeds_note


def _cv(**data):
    return experiment_from_dict({"data": {"n_records": 400, "folds": 4, **data}, "search": {"lr": [1e-3, 5e-4]}, "repeats": 2,
                                 "scheduler": {"name": "none"}})


def test_folds_are_stratified_disjoint_cover_the_pool_and_leave_the_test_split_out():
    data = prepare(_cv(test_fraction=0.2), use_cache=False)
    folds = [f"fold{k}" for k in range(4)]
    assert sorted(data.x) == [*folds, "test"]
    ids = [set(data.ids[f]) for f in folds]
    pool = set.union(*ids)
    assert sum(map(len, ids)) == len(pool) == 320 and not pool & set(data.ids["test"])
    counts = np.array([np.bincount(data.y[f], minlength=4) for f in folds])
    assert (counts.max(0) - counts.min(0) <= 1).all()  # stratified: each class split as evenly as it can be
    again = prepare(_cv(test_fraction=0.2), use_cache=False)
    assert again.ids == data.ids and again.data_hash == data.data_hash  # drawn once from the seed
    other = prepare(experiment_from_dict({"seed": 7, "data": {"n_records": 400, "folds": 4, "test_fraction": 0.2},
                                          "scheduler": {"name": "none"}}), use_cache=False)
    assert other.ids["fold0"] != data.ids["fold0"]


def test_a_fold_trains_on_the_other_folds_and_weighs_its_own_train_part():
    data = prepare(_cv(), use_cache=False)
    view = fold_view(data, 2)
    assert view.ids["val"] == data.ids["fold2"] and view.ids["train"] == data.ids["fold0"] + data.ids["fold1"] + data.ids["fold3"]
    np.testing.assert_array_equal(view.x["val"], data.x["fold2"])
    from ecg_ray.data.prepare import class_weights

    np.testing.assert_array_equal(view.weights, class_weights(view.y["train"]))
    assert view.data_hash == data.data_hash and fold_view(data, None) is data
    with pytest.raises(DataError, match="has 4 fold"):
        fold_view(data, 7)


def test_each_config_and_seed_runs_once_per_fold_and_a_single_split_is_unchanged():
    cfg = _cv()
    assert cfg.n_trials == 2 * 2 * 4
    assert [(t.lr, t.seed, t.fold) for t in cfg.grid()][:5] == [(1e-3, 42, 0), (1e-3, 42, 1), (1e-3, 42, 2), (1e-3, 42, 3), (1e-3, 43, 0)]
    single = load_experiment("experiments/quick.yaml")
    assert all(t.fold is None for t in single.grid()) and "folds" not in __import__(
        "ecg_ray.data.prepare", fromlist=["x"]).preparation_settings(single)  # cache keys and checkpoints as before


def test_random_and_optuna_searches_run_each_draw_on_every_fold():
    rnd = experiment_from_dict({"data": {"folds": 3}, "scheduler": {"name": "none"},
                                "search": {"algorithm": "random", "num_samples": 2, "lr": {"loguniform": [1e-4, 1e-2]}}})
    assert [t.fold for t in rnd.grid()] == [0, 1, 2, 0, 1, 2] and len({t.lr for t in rnd.grid()}) == 2
    opt = experiment_from_dict({"data": {"folds": 3}, "scheduler": {"name": "none"}, "repeats": 2,
                                "search": {"algorithm": "optuna", "num_samples": 4, "lr": {"loguniform": [1e-4, 1e-2]}}})
    # Optuna is told a draw's mean over its combos (ecg_ray.tuning.optuna_search): here its 2 seeds x 3 folds.
    assert [(c["seed"], c["fold"]) for c in opt.search_space.combos(opt.seed)] == [(s, f) for s in (42, 43) for f in range(3)]


def test_repeat_folds_cross_validates_the_top_configs(tmp_path):
    from helpers import fake_experiment

    from ecg_ray.commands.repeat import repeat_config

    exp = fake_experiment(tmp_path / "results" / "grid", [("t0000", {"lr": 1e-3}, [0.3, 0.5]), ("t0001", {"lr": 5e-4}, [0.2, 0.4])])
    source = experiment_from_dict({"name": "grid", "storage_path": str(tmp_path / "results"), "search": {"lr": [1e-3, 5e-4]},
                                   "data": {"n_records": 80}})
    record = json.loads((exp / "ecg_ray_experiment.json").read_text()) | {"config": source.to_dict()}
    (exp / "ecg_ray_experiment.json").write_text(json.dumps(record))
    cfg = repeat_config(str(exp), top=1, seeds=2, folds=5)
    assert cfg.data.folds == 5 and cfg.name == "grid_top1x2_cv5" and cfg.origin["folds"] == 5
    assert [(t.lr, t.seed, t.fold) for t in cfg.grid()] == [(1e-3, s, f) for s in (42, 43) for f in range(5)]
    with pytest.raises(ConfigError, match="--folds must be"):
        repeat_config(str(exp), top=1, seeds=2, folds=1)


@pytest.mark.parametrize("raw, error, words", [
    ({"data": {"folds": 1}}, ConfigError, "data.folds"),
    ({"data": {"folds": 101}}, ConfigError, "data.folds"),
    ({"data": {"folds": 2}, "search": {"fold": [0, 1]}}, ConfigError, "search.fold"),
    ({"data": {"folds": 2}, "scheduler": {"group": "trial"}}, ConfigError, "scheduler.group"),  # per-trial ASHA
])
def test_bad_fold_settings_are_refused_naming_the_key(raw, error, words):
    with pytest.raises(error, match=words):
        experiment_from_dict(raw)


def test_more_folds_than_the_smallest_class_has_records_is_refused_before_any_trial(tmp_path, capsys):
    exp = tmp_path / "many.yaml"
    exp.write_text(yaml.safe_dump({"name": "many", "storage_path": str(tmp_path), "data": {"n_records": 120, "folds": 20},
                                   "search": {"lr": 1e-3, "epochs": 1}, "scheduler": {"name": "none"}}))
    assert main(["tune", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "data.folds is 20" in err and "Use data.folds of at most" in err
    assert not (tmp_path / "many").exists() or not list((tmp_path / "many").glob("*/result.json"))


def test_a_given_val_file_is_cross_validated_together_with_the_train_file(tmp_path):
    from helpers import frame

    from ecg_ray.data.synthetic import generate

    records = generate(200, seed=3)
    train, val = frame(records).iloc[:150], frame(records).iloc[150:]
    train.assign(record=records.ids[:150]).to_parquet(tmp_path / "train.parquet")
    val.assign(record=records.ids[150:]).to_parquet(tmp_path / "val.parquet")
    cfg = experiment_from_dict({"data": {"source": "parquet", "path": str(tmp_path / "train.parquet"),
                                         "val_path": str(tmp_path / "val.parquet"), "folds": 2}, "scheduler": {"name": "none"}})
    data = prepare(cfg, use_cache=False)
    assert sorted(data.x) == ["fold0", "fold1"] and sorted(data.ids["fold0"] + data.ids["fold1"]) == sorted(records.ids)


def _fold_trials():
    """Two configs x seeds 42, 43 x folds 0..2; config B trails A by 0.02 on every (seed, fold) but one."""
    rows = []
    for lr, bonus in ((1e-3, 0.0), (5e-4, -0.02)):
        for seed in (42, 43):
            for fold in range(3):
                score = 0.5 + 0.01 * fold + 0.005 * (seed - 42) + bonus + (0.004 if (lr, seed, fold) == (5e-4, 43, 2) else 0)
                config = asdict(TrialConfig(lr=lr, seed=seed, fold=fold))
                rows.append({"trial_id": f"t{len(rows):04d}", **config, "best_val_macro_f1": score,
                             "val_challenge_f1": score, **{f"val_f1_{k}": score for k in ("N", "A", "O", "noisy")}})
    return pd.DataFrame(rows)


def test_configs_are_means_over_folds_and_seeds_tested_paired_by_seed_and_fold():
    from scipy import stats

    trials = _fold_trials()
    configs = rank_configs(trials)
    assert configs[["lr", "n_seeds", "n_folds", "n_trials", "folds"]].values.tolist() == [[1e-3, 2, 3, 6, "0,1,2"], [5e-4, 2, 3, 6, "0,1,2"]]
    a, b = (trials[trials["lr"] == lr].sort_values(["seed", "fold"])["best_val_macro_f1"] for lr in (1e-3, 5e-4))
    assert configs["best_val_macro_f1_mean"].iloc[0] == pytest.approx(a.mean())
    assert configs["p_vs_best"].iloc[1] == pytest.approx(stats.ttest_rel(a.to_numpy(), b.to_numpy()).pvalue)
    assert "3-fold cross-validation" in seeds_note(configs) and "(seed, fold)" in seeds_note(configs)
    tex = configs_to_latex(configs)
    assert "3-fold cross-validation" in tex and "paired $t$-test by seed and fold" in tex


def test_a_real_cross_validated_experiment(ray_local, storage_root, tmp_path, capsys):
    """2 folds x 2 learning rates with a test split on Ray, in the bucket where the S3 server runs: every
    fold trial equals that fold run alone, bit for bit; the tables aggregate over folds; the
    out-of-fold metrics equal a recomputation from the saved predictions; the command read each file
    of the folder at most once."""
    import torch

    from ecg_ray import storage
    from ecg_ray.schema import EPOCH_COLUMNS
    from ecg_ray.training.loop import build_trial, run_epoch
    from helpers import read_json, read_table, tiny_experiment

    exp_file = tiny_experiment(tmp_path, "cv", storage_root, search={"lr": [0.001, 0.0005]},
                               data={"n_records": 200, "folds": 2, "test_fraction": 0.2})
    storage.READS.clear()
    assert main(["tune", str(exp_file), "--format", "csv", "latex"]) == 0
    read_twice = {loc: n for loc, n in storage.READS.items() if n > 1}
    assert storage.READS and not read_twice, read_twice  # the read budget: each file once per command
    out = capsys.readouterr().out
    assert "2-fold cross-validation" in out
    assert " fold=0: epoch 1/" in out and " fold=1: epoch 1/" in out  # the progress lines say which fold
    assert "| 42.0000 |" not in out and "| 42 |" in out  # seeds, folds and epochs read as whole numbers in the test table
    exp = storage.join(storage_root, "cv")
    page = storage.read_bytes(storage.join(exp, "report", "index.html")).decode()
    assert "<h2>Configs over folds and seeds</h2>" in page and "Configs over seeds<" not in page
    trials = read_table(storage.join(exp, "report", "trials.csv"))
    assert sorted(zip(trials["lr"], trials["fold"])) == [(0.0005, 0), (0.0005, 1), (0.001, 0), (0.001, 1)]
    splits = read_json(storage.join(exp, "data_splits.json"))
    assert sorted(splits["ids"]) == ["fold0", "fold1", "test"]
    configs = read_table(storage.join(exp, "report", "configs.csv"))
    assert configs["n_folds"].tolist() == [2, 2] and configs["n_trials"].tolist() == [2, 2]
    assert "2-fold cross-validation" in storage.read_bytes(storage.join(exp, "report", "configs.tex")).decode()
    assert len(read_table(storage.join(exp, "report", "test.csv"))) > 0
    oof = read_json(storage.join(exp, "oof_predictions.json"))
    pool = sorted(splits["ids"]["fold0"] + splits["ids"]["fold1"])
    assert sorted(oof["y"]) == pool and not set(pool) & set(splits["ids"]["test"])
    for _, config in configs.iterrows():
        ids = config["trial_ids"].split(",")
        pred = {r: p for t in ids for r, p in zip(oof["pred"][t]["ids"], oof["pred"][t]["pred"])}
        assert sorted(pred) == pool  # every record once, from the fold that held it out
        y, p = [oof["y"][r] for r in pool], [pred[r] for r in pool]
        assert config["oof_macro_f1"] == pytest.approx(f1_score(y, p, labels=[0, 1, 2, 3], average="macro", zero_division=0))
        assert config["oof_macro_f1_ci_low"] <= config["oof_macro_f1"] <= config["oof_macro_f1_ci_high"]
    from ecg_ray.results.inference.predict import load_model

    models, saved = load_model(storage.join(exp, "best_model.pt"))  # the best config's folds as one model
    assert len(models) == 2 and sorted(m["trial_id"] for m in saved["members"]) == sorted(configs["trial_ids"][0].split(","))
    assert sorted(m["trial"]["fold"] for m in saved["members"]) == [0, 1] and storage.is_file(storage.join(exp, "best_trial_model.pt"))
    cfg = load_experiment(exp_file)
    data = prepare(cfg)
    records = [json.loads(line) for rel in storage.files(exp) if rel.count("/") == 1 and rel.endswith("/result.json")
               for line in storage.read_bytes(storage.join(exp, rel)).decode().splitlines() if line.strip()]
    torch.set_num_threads(1)
    for trial in cfg.grid():
        view = fold_view(data, trial.fold)
        state = build_trial(trial, view.weights)
        (reported,) = [r for r in records if r["config"]["lr"] == trial.lr and r["config"]["fold"] == trial.fold]
        ours = run_epoch(state, view, trial.batch_size)
        assert {k: ours[k] for k in EPOCH_COLUMNS} == {k: reported[k] for k in EPOCH_COLUMNS}
