"""What a reviewer asks next: cost columns (FLOPs by hand), the Pareto set, hyperparameter importance,
figures readable at 17 keys, and `ecg-ray compare` paired and unpaired (its page in Chromium)."""

import itertools
import json
import warnings

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from browser import chromium, load
from helpers import fake_experiment

from ecg_ray.commands.main import main
from ecg_ray.config import TrialConfig
from ecg_ray.results.page import figures
from ecg_ray.results.compare import write_comparison
from ecg_ray.results.analysis.stats import paired_bootstrap
from ecg_ray.results.analysis.cost import measure, model_cost, shape_of
from ecg_ray.results.analysis.importance import importance
from ecg_ray.results.page.console import console_columns, summary_text
from ecg_ray.results.report import write_report
from ecg_ray.results.analysis.tradeoffs import pareto_front


def hand_macs(hidden: int, length: int = 9000, n_fft: int = 256, hop: int = 128, c1: int = 16) -> int:
    """The notebook's model by hand, STFT excluded (FlopCounterMode counts no FFT): its two 3x3
    convolutions (bias adds not counted), the GRU's input and hidden products per step, the classifier."""
    bins, frames = n_fft // 2 + 1, 1 + length // hop  # 129 x 71 (centred STFT)
    conv1 = c1 * 1 * 9 * bins * frames
    conv2 = 2 * c1 * c1 * 9 * (bins // 2) * (frames // 2)
    steps, features = frames // 2 // 2, 2 * c1 * (bins // 2 // 2)  # 17 steps of 32 x 32 = 1024
    gru = steps * 3 * hidden * (features + hidden)
    return conv1 + conv2 + gru + 4 * hidden


@pytest.mark.parametrize("hidden, params", [(128, 448_452), (256, 990_404)])
def test_flops_of_the_notebooks_model_match_a_hand_count(hidden, params):
    cost = model_cost(shape_of(TrialConfig(hidden_size=hidden), 9000))
    assert cost == {"params": params, "macs_per_record": hand_macs(hidden)}
    assert hand_macs(128) == 19_161_584


def test_costs_are_measured_once_per_model_shape():
    trials = [TrialConfig(lr=lr, hidden_size=h, dropout=d, target_length=1024)
              for lr, h, d in itertools.product((1e-3, 5e-4), (32, 64), (0.2, 0.3))]
    rows = measure(trials, 9000, "cpu", threads=1, repeats=2)
    assert [r["hidden_size"] for r in rows] == [32, 64]  # lr and dropout cost nothing at inference
    for row in rows:
        assert row["target_length"] == 1024 and row["macs_per_record"] == hand_macs(row["hidden_size"], 1024)
        assert 0 < row["latency_b1_ms"] < row["latency_b256_ms"] and row["latency_device"].startswith("cpu:")
    assert measure(trials[:1], 9000, "cpu", 1, repeats=0)[0]["latency_b1_ms"] is None


def test_pareto_set_of_a_hand_made_table():
    score = [0.60, 0.55, 0.62, 0.50, 0.62, np.nan, 0.58]
    cost = [10.0, 5.0, 20.0, 5.0, 30.0, 1.0, 10.0]
    # 0: best at 10; 1: best at 5; 2: best overall, cheaper than 4; 3: beaten by 1 at the same cost;
    # 4: as good as 2 but dearer; 5: unknown score; 6: beaten by 0 at the same cost.
    assert pareto_front(score, cost).tolist() == [True, True, True, False, False, False, False]
    assert pareto_front([0.5, 0.5], [1.0, 1.0]).tolist() == [True, True]  # equal points dominate neither


def test_importance_ranks_the_deciding_key_first_and_noise_last():
    rng = np.random.default_rng(3)
    rows = [{"optimizer": opt, "dropout": d, "lr": lr, "best_val_macro_f1_mean": (0.6 if opt == "adam" else 0.3)
             + 0.1 * np.log10(lr / 1e-4) + rng.normal(0, 0.002)}
            for opt, d, lr in itertools.product(("adam", "sgd"), (0.1, 0.2, 0.3), (1e-4, 1e-3))]
    table, note = importance(pd.DataFrame(rows), ["lr", "dropout", "optimizer"])
    assert table["key"].tolist() == ["optimizer", "lr", "dropout"] and table["importance"].iloc[-1] < 0.01
    assert abs(table["importance"].sum() - 1) < 1e-9 and "fANOVA" in note
    again, _ = importance(pd.DataFrame(rows), ["lr", "dropout", "optimizer"])
    pd.testing.assert_frame_equal(table, again)  # seeded: the same numbers every time
    few, why = importance(pd.DataFrame(rows[:5]), ["lr", "optimizer"])
    assert few is None and "at least 8 configs" in why


def _wide_trials(n_keys: int = 17, n: int = 40) -> pd.DataFrame:
    from ecg_ray.schema import CONFIG_COLUMNS

    rng = np.random.default_rng(0)
    keys = [c for c in CONFIG_COLUMNS if c != "seed"][:n_keys]
    rows = []
    for i in range(n):
        row = {k: 0 for k in CONFIG_COLUMNS} | {"seed": 42, "trial_id": f"t{i:04d}", "rank": i + 1}
        row |= {k: (float(10 ** rng.uniform(-4, -2)) if j % 3 == 0 else int(rng.integers(0, 3)) if j % 3 == 1
                    else str(rng.choice(["a", "b"]))) for j, k in enumerate(keys)}
        row |= {"best_val_macro_f1": float(rng.uniform(0.3, 0.6)), "best_epoch": 3, "last_val_macro_f1": 0.4,
                "val_challenge_f1": 0.4, "val_acc": 0.5, "epochs_run": 4, "early_stopped": False, "wall_time_s": 10.0}
        row |= {f"val_f1_{k}": 0.4 for k in ("N", "A", "O", "noisy")}
        rows.append(row)
    return pd.DataFrame(rows), keys


def test_the_hyperparameter_figure_wraps_at_17_keys_without_a_layout_warning(tmp_path):
    trials, keys = _wide_trials()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "Tight layout not applied" fails here
        path = figures.by_hyperparameter(trials, tmp_path / "h.png", order=keys[::-1])
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width <= 2000 and height <= 1400 and width / height < 2.5, (width, height)


def test_the_console_shows_the_keys_that_vary_and_names_the_rest():
    trials, keys = _wide_trials()
    cols, hidden = console_columns(["rank", "lr", "hidden_size", "best_val_macro_f1", "epochs_run"], trials)
    assert cols[0] == "rank" and cols[-2:] == ["best_val_macro_f1", "epochs_run"] and len(cols) == 3 + 6
    assert hidden == [k for k in keys if trials[k].nunique() > 1][6:]
    text = summary_text(trials)
    assert f"{len(hidden)} more varying key(s) in trials.csv" in text
    assert max(line.count("|") for line in text.splitlines()) - 1 <= 16  # columns, not 26


def _grid(exp, data_hash="feedc0ffee123456", bonus=0.0, seeds=(42, 43), test=None, costs=None, split=None):
    trials, i = [], 0
    for lr, h, opt in itertools.product((1e-3, 5e-4), (128, 256), ("adam", "sgd")):
        for seed in seeds:
            top = 0.3 + (0.2 if opt == "adam" else 0) + (0.05 if h == 256 else 0) + bonus + 0.01 * (seed - 42)
            trials.append((f"t{i:04d}", {"lr": lr, "hidden_size": h, "optimizer": opt, "seed": seed}, [top - 0.1, top]))
            i += 1
    return fake_experiment(exp, trials, data_hash, split, test, costs)


COSTS = {"repeats": 5, "host": "box", "rows": [
    {"hidden_size": h, "gru_layers": 1, "bidirectional": False, "conv_channels": 16, "n_fft": 256, "hop_length": 128,
     "normalize": "none", "target_length": 9000, "precision": "fp32", "channels_last": False, "params": p,
     "macs_per_record": m, "latency_b1_ms": l1, "latency_b256_ms": l2, "latency_device": "cpu: x86_64, 1 thread(s)"}
    for h, p, m, l1, l2 in ((128, 448_452, 19_161_584, 2.0, 480.0), (256, 990_404, 28_353_520, 2.1, 530.0))]}


def test_the_report_carries_costs_pareto_and_importance(tmp_path):
    exp = _grid(tmp_path / "grid", costs=COSTS)
    _, written, problems = write_report(str(exp))
    assert problems == []
    report = exp / "report"
    configs = pd.read_csv(report / "configs.csv")
    assert {"params", "macs_per_record", "epoch_time_s", "latency_b1_ms", "latency_b256_ms"} <= set(configs.columns)
    assert configs.loc[configs["hidden_size"] == 256, "params"].unique().tolist() == [990_404]
    assert configs["epoch_time_s"].tolist() == [2.0] * 8  # fake_epoch's
    pareto = pd.read_csv(report / "pareto.csv")
    # The best configs (256, adam) and the best of the cheaper shape (128, adam), by each cost; lr
    # changes nothing here, so each comes at both learning rates (equal points dominate neither).
    assert sorted(zip(pareto["hidden_size"], pareto["optimizer"])) == [(128, "adam")] * 2 + [(256, "adam")] * 2
    assert pareto["pareto_macs"].all() and pareto["pareto_params"].all()
    weights = pd.read_csv(report / "importance.csv")
    assert weights["key"].iloc[0] == "optimizer" and weights["key"].iloc[-1] == "lr"
    for name in ("pareto", "importance", "parallel", "hyperparameters"):
        image = matplotlib.image.imread(report / f"{name}.png")
        assert image.shape[0] > 200 and image.std() > 0, name
    html = (report / "index.html").read_text()
    assert "Cost and the Pareto front" in html and "What mattered" in html and "fANOVA" in html
    assert "which depends on the machine" in html
    first = (report / "index.html").read_bytes()
    write_report(str(exp))
    assert (report / "index.html").read_bytes() == first  # deterministic, byte for byte


def test_without_costs_or_enough_configs_the_report_says_so(tmp_path):
    exp = fake_experiment(tmp_path / "small", [("t0000", {"lr": 1e-3}, [0.4, 0.5]), ("t0001", {"lr": 5e-4}, [0.3, 0.4])])
    write_report(str(exp))
    html = (exp / "report" / "index.html").read_text()
    assert "No costs.json" in html and "at least 8 configs" in html
    assert not (exp / "report" / "importance.csv").exists() and not (exp / "report" / "pareto.png").exists()


def _predictions(n=60, trials=("t0012", "t0013")):  # the best config: lr 5e-4 (ties break on config order), 256, adam
    y = [i % 4 for i in range(n)]
    return lambda wrong: {"ids": [f"x{i}" for i in range(n)], "y": y,
                          "pred": {t: [(v + 1) % 4 if i < wrong else v for i, v in enumerate(y)] for t in trials}}


def test_compare_pairs_experiments_on_the_same_data_and_split(tmp_path):
    preds = _predictions()
    a = _grid(tmp_path / "a" / "extended", bonus=0.05, test=preds(5), costs=COSTS)
    b = _grid(tmp_path / "b" / "grid", test=preds(15))
    out = tmp_path / "cmp"
    best, pairs, written, problems = write_comparison([str(a), str(b)], str(out))
    assert problems == [] and len(best) == 6 and best["experiment"].tolist()[:1] == ["extended"]
    row = pairs.iloc[0]
    assert bool(row["paired"]) and row["shared_seeds"] == "42,43" and row["diff"] == pytest.approx(0.05)
    assert row["p_paired_by_seed"] == 0.0  # every seed's difference is the same 0.05
    assert row["n_test_records"] == 60 and row["test_diff"] > 0 and row["test_diff_ci_low"] <= row["test_diff"] <= row["test_diff_ci_high"]
    for name in ("best.csv", "best.md", "best.tex", "pairs.csv", "pairs.md", "pairs.tex", "learning_curves.png", "index.html"):
        assert str(out / name) in written
    assert matplotlib.image.imread(out / "learning_curves.png").std() > 0
    first = (out / "index.html").read_bytes()
    write_comparison([str(a), str(b)], str(out))
    assert (out / "index.html").read_bytes() == first


def test_paired_bootstrap_by_hand():
    y = [0, 1, 2, 3] * 10
    same = paired_bootstrap(y, y, y)
    assert same == {"test_diff": 0.0, "test_diff_ci_low": 0.0, "test_diff_ci_high": 0.0, "n_test_records": 40}
    worse = [(v + 1) % 4 if i < 10 else v for i, v in enumerate(y)]
    better = paired_bootstrap(y, y, worse)
    assert better["test_diff"] > 0 and better["test_diff_ci_low"] > 0


def test_compare_refuses_pairing_on_other_data_and_still_writes_a_page(tmp_path, capsys):
    a = _grid(tmp_path / "a" / "grid")
    b = _grid(tmp_path / "b" / "grid", data_hash="0123456789abcdef")
    c = _grid(tmp_path / "c" / "grid", split={"train": ["r0"], "val": ["v0"]})
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), str(c), "--out", str(out)]) == 0
    pairs = pd.read_csv(out / "pairs.csv")
    assert not pairs["paired"].any() and pairs["p_paired_by_seed"].isna().all()
    assert "different data" in pairs["pairing"].iloc[0] and "different split" in pairs["pairing"].iloc[1]
    html = (out / "index.html").read_text()
    assert "grid (1) vs grid (2): different data" in html
    assert "different data" in capsys.readouterr().out
    assert main(["compare", str(a), "--out", str(out)]) == 2
    assert main(["compare", str(a), str(a), "--out", str(out)]) == 2
    assert main(["compare", str(a), str(b), "--top", "0", "--out", str(out)]) == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_the_compare_page_renders_in_headless_chromium(tmp_path):
    a = _grid(tmp_path / "a" / "extended", bonus=0.05)
    b = _grid(tmp_path / "b" / "grid", data_hash="0123456789abcdef")
    write_comparison([str(a), str(b)], str(tmp_path / "cmp"))
    page = load((tmp_path / "cmp" / "index.html").as_uri())
    assert page["title"] == "ecg_ray compare: extended vs grid"
    assert page["console_errors"] == [] and page["exceptions"] == []
    assert all(url.startswith(("file:", "data:")) for url in page["requests"])
    assert len(page["images"]) == 1 and page["images"][0]["complete"] and min(page["images"][0]["natural"]) > 0
