"""Seeds as part of the experiment, and the per-config table over seeds."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from ecg_ray.config import TrialConfig, experiment_from_dict, load_experiment
from ecg_ray.errors import ConfigError
from ecg_ray.results.tables.ranking import SEED_METRICS, rank_configs
from ecg_ray.schema import CONFIG_COLUMNS
from ecg_ray.results.analysis.stats import holm, mean_sd_ci, paired_p_value

T_975 = {1: 12.706204736174698, 2: 4.302652729749464}  # Student's t quantiles, from tables


def test_a_seed_list_and_repeats_expand_to_one_trial_per_config_and_seed():
    listed = experiment_from_dict({"search": {"lr": [1e-3, 5e-4], "seed": [42, 43, 44]}})
    repeated = experiment_from_dict({"search": {"lr": [1e-3, 5e-4]}, "repeats": 3})
    assert listed.grid() == repeated.grid()
    assert [(t.lr, t.seed) for t in repeated.grid()] == [(1e-3, s) for s in (42, 43, 44)] + [(5e-4, s) for s in (42, 43, 44)]
    assert repeated.seeds == [42, 43, 44] and list(repeated.trials()) == [f"t{i:04d}" for i in range(6)]
    assert experiment_from_dict({"seed": 7, "repeats": 2}).seeds == [7, 8]
    with pytest.raises(ConfigError, match="The 'repeats' parameter must be 1 when search.seed lists the seeds"):
        experiment_from_dict({"search": {"seed": [1, 2]}, "repeats": 2})


def test_each_seeds_trial_is_the_same_config_and_seed_run_alone(tmp_path):
    from ecg_ray.data.prepare import prepare
    from ecg_ray.training.loop import build_trial, run_epoch

    cfg = load_experiment("experiments/quick.yaml", **{"data.n_records": 80, "data.cache_dir": str(tmp_path)})
    cfg = experiment_from_dict({**cfg.to_dict(), "repeats": 2})
    data = prepare(cfg)
    grid = cfg.grid()
    in_grid = next(t for t in grid if t.seed == 43)
    alone = TrialConfig(lr=in_grid.lr, hidden_size=128, dropout=0.2, optimizer="adam", batch_size=32, epochs=4, seed=43)
    assert in_grid == alone
    first = run_epoch(build_trial(in_grid, data.weights), data, 32)  # one after the other, as trials run:
    assert run_epoch(build_trial(alone, data.weights), data, 32) == first  # dropout draws from the global RNG


def test_mean_sd_ci_by_hand():
    assert mean_sd_ci([0.6])[0] == 0.6 and all(math.isnan(v) for v in mean_sd_ci([0.6])[1:])
    mean, sd, lo, hi = mean_sd_ci([0.5, 0.7])
    assert mean == pytest.approx(0.6) and sd == pytest.approx(math.sqrt(0.02))
    assert (lo, hi) == pytest.approx((0.6 - T_975[1] * math.sqrt(0.02) / math.sqrt(2), 0.6 + T_975[1] * math.sqrt(0.02) / math.sqrt(2)))
    mean, sd, lo, hi = mean_sd_ci([0.58, 0.57, 0.60])
    sd_hand = math.sqrt(((0.58 - 0.585) ** 2 + (0.57 - 0.585) ** 2 + (0.60 - 0.585) ** 2 - 3 * (0.585 - 1.75 / 3) ** 2) / 2)
    assert mean == pytest.approx(1.75 / 3) and sd == pytest.approx(sd_hand)
    assert hi - lo == pytest.approx(2 * T_975[2] * sd_hand / math.sqrt(3))


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([math.nan, 0.02, 0.5])
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.04, 0.5])


def test_paired_p_value_edges():
    assert math.isnan(paired_p_value([0.5], [0.4]))
    assert paired_p_value([0.5, 0.6], [0.5, 0.6]) == 1.0
    assert paired_p_value([0.5, 0.6], [0.4, 0.5]) == 0.0  # always exactly 0.1 worse


def _trials(configs: dict[float, list[float]]) -> pd.DataFrame:
    rows = []
    for lr, scores in configs.items():
        for seed, score in enumerate(scores, start=42):
            row = dict(TrialConfig(lr=lr, seed=seed).__dict__) | {"trial_id": f"{lr}-{seed}"}
            row |= {m: score for m in SEED_METRICS}
            rows.append(row)
    return pd.DataFrame(rows)[["trial_id", *CONFIG_COLUMNS, *SEED_METRICS]]


def test_the_tie_test_on_data_where_the_answer_is_known():
    best = [0.60, 0.62, 0.61, 0.63, 0.60]
    configs = rank_configs(_trials({
        0.001: best,
        0.002: [0.595, 0.624, 0.606, 0.629, 0.601],  # noise around the best: indistinguishable
        0.003: [0.50, 0.53, 0.51, 0.52, 0.49],  # 0.1 worse on every seed: different
        0.004: [0.59],  # one seed: no test possible
    }))
    assert configs["lr"].tolist() == [0.001, 0.002, 0.004, 0.003]  # ranked by mean
    assert configs["tied_with_best"].tolist() == ["best", "yes", "n/a", "no"]
    assert configs["n_seeds"].tolist() == [5, 5, 1, 5] and configs["seeds"].iloc[0] == "42,43,44,45,46"
    top = configs.iloc[0]
    mean, sd, lo, hi = mean_sd_ci(best)
    assert (top["best_val_macro_f1_mean"], top["best_val_macro_f1_sd"], top["best_val_macro_f1_ci_low"]) == (mean, sd, lo)
    one = configs.set_index("lr").loc[0.004]
    assert math.isnan(one["best_val_macro_f1_ci_low"]) and math.isnan(one["p_vs_best"])
    raw = paired_p_value(best, [0.50, 0.53, 0.51, 0.52, 0.49])
    assert configs.set_index("lr").loc[0.003, "p_vs_best"] == pytest.approx(min(1.0, 2 * raw))  # Holm over 2 tests


@pytest.mark.ray
def _test_split_labels(exp, ids):
    """The labels of the test records `ids`, as the experiment's own data preparation gives them."""
    from ecg_ray.data.prepare import prepare

    data = prepare(load_experiment(exp.parent / "seeds.yaml"))
    where = {rid: i for i, rid in enumerate(data.ids["test"])}
    return [data.y["test"][where[rid]] for rid in ids]


def test_a_real_two_seed_experiment_ranks_configs_and_matches_each_seed_alone(ray_local, tmp_path, capsys):
    from ecg_ray.commands.main import main
    from ecg_ray.data.prepare import prepare
    from ecg_ray.schema import EPOCH_COLUMNS
    from ecg_ray.training.loop import build_trial, run_epoch

    raw = yaml.safe_load(open("experiments/quick.yaml"))
    raw.update(name="seeds", storage_path=str(tmp_path), repeats=2, scheduler={"name": "none"}, report={"latency_repeats": 0})
    raw["data"].update(n_records=400, test_fraction=0.2)
    raw["search"].update(lr=[0.001], epochs=2)
    (tmp_path / "seeds.yaml").write_text(yaml.safe_dump(raw))
    assert main(["tune", str(tmp_path / "seeds.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Configs over seeds [42, 43]" in out and "Held-out test split (80 records" in out and "MiB of checkpoints" in out
    exp = tmp_path / "seeds"
    test = pd.read_csv(exp / "report" / "test.csv")
    single, ensemble = test[test["evaluated"] != "ensemble of 2"], test[test["evaluated"] == "ensemble of 2"]
    assert sorted(single["seed"]) == [42, 43] and (test["n_test"] == 80).all() and len(ensemble) == 1
    assert single["evaluated"].tolist() == ["best trial", "trial"] and ensemble["seed"].isna().all()
    best_trial = single.iloc[0]
    gain = ensemble.iloc[0]  # the paired bootstrap of the ensemble against the config's best trial
    assert gain["ensemble_gain"] == pytest.approx(gain["test_macro_f1"] - best_trial["test_macro_f1"])
    assert gain["ensemble_gain_ci_low"] <= gain["ensemble_gain"] <= gain["ensemble_gain_ci_high"]
    assert "Best model: " in out and "the ensemble of the best config's 2 trials" in out
    assert ((test["test_macro_f1_ci_low"] <= test["test_macro_f1"]) & (test["test_macro_f1"] <= test["test_macro_f1_ci_high"])).all()
    assert (test[[c for c in test.columns if c.startswith("cm_")]].sum(axis=1) == 80).all()
    assert len(json.loads((exp / "data_splits.json").read_text())["ids"]["test"]) == 80
    (run,) = json.loads((exp / "runs.json").read_text())
    assert run["ended"] and run["wall_s"] > 0 and run["versions"]["ray"] == __import__("ray").__version__ and run["trials"] == 2
    page = (exp / "report" / "index.html").read_text()
    assert page.count("<img ") == 6 and "confusion_test" in page and "fig-pareto" in page and run["started"] in page
    predictions = json.loads((exp / "test_predictions.json").read_text())  # what `ecg-ray compare` resamples
    assert len(predictions["ids"]) == len(predictions["y"]) == 80 and sorted(map(len, predictions["pred"].values())) == [80, 80]
    assert predictions["y"] == [int(v) for v in _test_split_labels(exp, predictions["ids"])]
    _check_the_ensemble_model(exp, tmp_path, predictions, ensemble.iloc[0], best_trial)
    configs = pd.read_csv(exp / "report" / "configs.csv")
    assert configs[["n_seeds", "seeds", "tied_with_best"]].values.tolist() == [[2, "42,43", "best"]]
    trials = pd.read_csv(exp / "report" / "trials.csv")
    assert sorted(trials["seed"]) == [42, 43]
    assert configs["best_val_macro_f1_mean"].iloc[0] == pytest.approx(trials["best_val_macro_f1"].mean())
    cfg = load_experiment(tmp_path / "seeds.yaml")
    data = prepare(cfg)
    records = [json.loads(l) for p in exp.glob("*/result.json") for l in p.read_text().splitlines() if l.strip()]
    import torch

    torch.set_num_threads(1)
    for trial in cfg.grid():  # each seed's trial, run alone here, equals what Ray ran beside the other
        state = build_trial(trial, data.weights)
        for r in sorted((r for r in records if r["config"]["seed"] == trial.seed), key=lambda r: r["epoch"]):
            assert {k: r[k] for k in EPOCH_COLUMNS} == {k: v for k, v in run_epoch(state, data, 32).items() if k in EPOCH_COLUMNS}


def _check_the_ensemble_model(exp, tmp_path, predictions, ensemble_row, best_trial_row):
    """best_model.pt is the config's two seeds as one model: `ecg-ray predict` on the test records gives
    the test table's ensemble predictions (the mean of both seeds' probabilities) and each record's
    agreement; best_trial_model.pt alone gives the best trial's."""
    from ecg_ray.commands.main import main
    from ecg_ray.data.prepare import prepare
    from ecg_ray.results.inference.predict import ENSEMBLE_FORMAT, MODEL_FORMAT, load_model

    models, saved = load_model(str(exp / "best_model.pt"))
    assert saved["format"] == ENSEMBLE_FORMAT and len(models) == 2
    assert [m["trial_id"] for m in saved["members"]] == ensemble_row["members"].split(",")
    assert saved["members"][0]["trial_id"] == best_trial_row["trial_id"]
    assert load_model(str(exp / "best_trial_model.pt"))[1]["format"] == MODEL_FORMAT
    data = prepare(load_experiment(exp.parent / "seeds.yaml"))
    test = pd.DataFrame({"record": data.ids["test"], "signal": list(data.x["test"].astype(np.float64)), "label": data.y["test"]})
    test.to_parquet(tmp_path / "test.parquet")
    letters = ["N", "A", "O", "~"]
    for model, expected in (("best_model.pt", predictions["ensemble"]["1"]), ("best_trial_model.pt",
                                                                              predictions["pred"][best_trial_row["trial_id"]])):
        assert main(["predict", str(exp / model), str(tmp_path / "test.parquet"), "--out", str(tmp_path / "p.csv")]) == 0
        pred = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("record").loc[predictions["ids"]]
        assert pred["predicted"].tolist() == [letters[p] for p in expected]
        assert ("agreement" in pred) == (model == "best_model.pt")
    assert set(pred.index) == set(predictions["ids"])


def test_configs_tex_is_the_papers_table():
    from ecg_ray.results.tables.export import configs_to_latex

    configs = rank_configs(_trials({0.001: [0.60, 0.62, 0.61], 0.002: [0.598, 0.615, 0.607], 0.003: [0.40, 0.41, 0.42]}))
    tex = configs_to_latex(configs)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{table}[t]" and r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert lines[4] == r"lr & $n$ & val macro-F1 & 95\% CI & challenge F1 \\"  # only the key that varies
    rows = lines[6:9]
    assert rows[0].startswith(r"0.0010 & 3 & \textbf{0.610 $\pm$ 0.010}") and "dagger" not in rows[0]
    assert r"$\pm$" in rows[1] and rows[1].count(r"\textbf") == 0 and r"$^\dagger$" in rows[1]  # tied with the best
    assert r"$^\dagger$" not in rows[2]
    assert "over seeds 42, 43, 44" in tex and "Holm-corrected" in tex and tex.count(r"\textbf") == 1
    single = configs_to_latex(rank_configs(_trials({0.001: [0.6], 0.002: [0.5]})))
    assert "one run each (seed 42), so no confidence interval" in single and r"$\pm$" not in single.split(r"\caption")[0]


def test_repeat_takes_the_top_k_configs_of_a_finished_folder_at_n_seeds(tmp_path):
    from test_report import _trial

    from ecg_ray.commands.repeat import repeat_config

    exp = tmp_path / "results" / "wide"
    _trial(exp, "t0000", 0.001, [0.2, 0.5])
    _trial(exp, "t0001", 0.0005, [0.1, 0.3])  # the worst: left out
    _trial(exp, "t0002", 0.003, [0.3, 0.6])
    source = experiment_from_dict({"name": "wide", "storage_path": str(tmp_path / "results"),
                                   "search": {"lr": [0.001, 0.0005, 0.003], "epochs": 4}, "data": {"n_records": 80}})
    (exp / "ecg_ray_experiment.json").write_text(json.dumps({"config": source.to_dict(), "data_hash": "abc123"}))
    cfg = repeat_config(str(exp), top=2, seeds=3)
    assert [(t.lr, t.seed) for t in cfg.grid()] == [(0.003, 42), (0.003, 43), (0.003, 44), (0.001, 42), (0.001, 43), (0.001, 44)]
    assert cfg.name == "wide_top2x3" and cfg.storage_path == str(tmp_path / "results") and cfg.scheduler.name == "none"
    assert cfg.data == source.data and cfg.seed == source.seed  # the same data and split
    assert cfg.origin == {"experiment": str(exp), "data_hash": "abc123", "top": 2, "ranked_by": "best_val_macro_f1",
                          "trial_ids": ["t0002", "t0000"]}
    assert all(t.epochs == 4 for t in cfg.grid())
    with pytest.raises(ConfigError, match="--top and --seeds must be at least 1"):
        repeat_config(str(exp), top=0, seeds=3)


def test_the_test_split_never_reaches_training_or_selection(tmp_path):
    """Change only the test split's labels: every epoch's train and val metrics stay the same, bit for bit."""
    from dataclasses import replace

    from ecg_ray.data.prepare import prepare
    from ecg_ray.training.loop import build_trial, run_epoch

    cfg = load_experiment("experiments/quick.yaml", **{"data.n_records": 200, "data.test_fraction": 0.2,
                                                        "data.cache_dir": str(tmp_path)})
    data = prepare(cfg)
    assert len(data.y["test"]) == 40 and not set(data.ids["test"]) & set(data.ids["train"] + data.ids["val"])
    flipped = replace(data, y={**data.y, "test": (data.y["test"] + 1) % 4})
    trial = cfg.grid()[0]
    first = [run_epoch(s, data, 32) for s in [build_trial(trial, data.weights)] for _ in range(2)]
    second = [run_epoch(s, flipped, 32) for s in [build_trial(trial, flipped.weights)] for _ in range(2)]
    assert first == second


def test_bootstrap_ci_is_seeded_and_tight_for_perfect_predictions():
    from ecg_ray.results.inference.evaluate import bootstrap_ci

    y = np.array([0, 1, 2, 3] * 10)
    perfect = bootstrap_ci(y, y, samples=200)
    assert perfect["test_macro_f1_ci_low"] == perfect["test_macro_f1_ci_high"] == 1.0
    noisy = np.where(np.arange(40) % 5 == 0, (y + 1) % 4, y)
    a, b = bootstrap_ci(y, noisy, samples=200), bootstrap_ci(y, noisy, samples=200)
    assert a == b and a["test_macro_f1_ci_low"] < 0.8 < a["test_macro_f1_ci_high"]
