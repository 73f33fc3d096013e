"""Search spaces beyond the grid (random draws from Ray Tune-named distributions) and the training
knobs worth searching (weight decay, learning-rate schedules with warm-up, gradient clipping,
label smoothing), each defaulting to the notebook's behaviour."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from ecg_ray.config import TrialConfig, experiment_from_dict, load_experiment
from ecg_ray.errors import ConfigError
from ecg_ray.models import build_model

RANDOM = {"algorithm": "random", "num_samples": 6, "lr": {"loguniform": ["1e-4", "3e-3"]},
          "dropout": {"uniform": [0.0, 0.5]}, "hidden_size": {"choice": [128, 256, 384]},
          "epochs": {"randint": [10, 40]}, "weight_decay": {"quniform": [0.0, 0.001, 0.0001]}, "optimizer": ["adam", "sgd"]}


def _cfg(search, **top):
    return experiment_from_dict({"search": search, **top})


def test_every_distribution_draws_inside_its_range_and_of_the_right_type():
    trials = list(_cfg(RANDOM).trials().values())
    assert len(trials) == 12  # 6 draws x the optimizer axis
    for t in trials:
        assert 1e-4 <= t.lr <= 3e-3 and 0.0 <= t.dropout < 0.5 and t.hidden_size in (128, 256, 384)
        assert isinstance(t.epochs, int) and 10 <= t.epochs < 40
        assert math.isclose(round(t.weight_decay / 1e-4) * 1e-4, t.weight_decay, abs_tol=1e-12) and 0 <= t.weight_decay <= 1e-3
    draws = [dataclasses.replace(t, optimizer="adam") for t in trials]
    assert draws[0::2] == draws[1::2]  # each draw runs with every grid value: adam and sgd see the same draw
    assert len(set(draws[0::2])) == 6  # never the same config twice


def test_random_search_is_reproducible_for_a_seed_and_differs_between_seeds():
    assert _cfg(RANDOM).trials() == _cfg(RANDOM).trials()
    assert _cfg(RANDOM, seed=7).trials() != _cfg(RANDOM).trials()
    cfg = _cfg(RANDOM, repeats=2)
    # The experiment file records the config; reading it back (a resume) draws exactly the same trials.
    assert experiment_from_dict(cfg.to_dict()).trials() == cfg.trials()
    seeds = [t.seed for t in cfg.grid()]
    assert seeds[:2] == [42, 43] and len(cfg.grid()) == 24  # repeats pair each draw with each seed


@pytest.mark.parametrize("search, message", [
    ({"lr": {"loguniform": [1e-4, 3e-3]}}, "search.lr is a distribution (loguniform); set `search.algorithm: random`"),
    ({"algorithm": "random", "lr": [1e-3]}, "needs at least one search key given as a distribution"),
    ({"algorithm": "bayes", "lr": [1e-3]}, "The 'search.algorithm' parameter must be one of"),
    ({"num_samples": 4, "lr": [1e-3]}, "The 'search.num_samples' parameter must be set only with search.algorithm: random or optuna"),
    ({"algorithm": "optuna", "lr": [1e-3]}, "search.algorithm 'optuna' needs at least one search key given as a distribution"),
    ({"suggest_batch": 2, "lr": [1e-3]}, "The 'search.suggest_batch' parameter must be set only with an adaptive search.algorithm (optuna)"),
    ({"algorithm": "optuna", "suggest_batch": 0, "lr": {"uniform": [1e-4, 1e-3]}}, "'search.suggest_batch' parameter must be an int in [1, 10000]"),
    ({"algorithm": "random", "lr": {"normal": [0, 1]}}, "The 'search.lr' parameter must be a list of values or one distribution"),
    ({"algorithm": "random", "lr": {"uniform": [3e-3, 1e-4]}}, "must be a uniform range with low < high"),
    ({"algorithm": "random", "lr": {"loguniform": [0.0, 1e-3]}}, "The 'search.lr' parameter must be a loguniform range above 0"),
    ({"algorithm": "random", "lr": {"uniform": [1e-4, 2.0]}}, "The 'search.lr' parameter must be a float in (0.0, 1.0]. Got 2.0"),
    ({"algorithm": "random", "lr": {"uniform": [1e-3]}}, "must be {uniform: [low, high]} with numbers"),
    ({"algorithm": "random", "optimizer": {"uniform": [0.0, 1.0]}}, "(optimizer takes one of"),
    ({"algorithm": "random", "hidden_size": {"uniform": [64.0, 256.0]}}, "(hidden_size takes an int)"),
    ({"algorithm": "random", "dropout": {"randint": [0, 1]}}, "(dropout takes a float)"),
    ({"algorithm": "random", "dropout": {"uniform": [0.0, 1.5]}}, "The 'search.dropout' parameter must be a float in [0.0, 1.0)"),
    ({"algorithm": "random", "optimizer": {"choice": ["adam", "rmsprop"]}}, "The 'search.optimizer' parameter must be one of"),
    ({"algorithm": "random", "hidden_size": {"choice": []}}, "{choice: [a non-empty list without repeated values]}"),
    ({"algorithm": "random", "num_samples": 5, "optimizer": {"choice": ["adam", "sgd"]}}, "must be at most 2 here"),
    ({"algorithm": "random", "weight_decay": {"quniform": [0.0, 0.001, 0.01]}}, "a quniform step q in (0, high - low]"),
])
def test_bad_search_spaces_are_refused_naming_the_key(search, message):
    with pytest.raises(ConfigError) as err:
        _cfg(search)
    assert message in str(err.value)


def test_the_extended_experiment_reads_and_its_first_batch_draws():
    from ecg_ray.tuning.optuna_search import suggest_batch

    cfg = load_experiment("experiments/extended.yaml")
    space = cfg.search_space
    assert space.algorithm == "optuna" and cfg.n_trials == cfg.search["num_samples"] and cfg.scheduler.name == "asha"
    trials = space.grid(cfg.seed, suggest_batch(space, cfg.seed, 0, space.suggest_batch, []))
    assert len({t.lr_schedule for t in trials}) > 1 and any(t.label_smoothing > 0 for t in trials)


# --- the training knobs ------------------------------------------------------------------------


def test_learning_rate_by_epoch_for_each_schedule():
    from ecg_ray.training.loop import lr_factor

    def lrs(schedule, epochs=8, warmup=0):
        t = TrialConfig(lr=1e-3, epochs=epochs, lr_schedule=schedule, warmup_epochs=warmup)
        return [round(lr_factor(t, e), 6) for e in range(epochs)]

    assert lrs("constant") == [1.0] * 8
    assert lrs("step") == [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    cosine = lrs("cosine")
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] > 0
    assert lrs("cosine", warmup=2)[:3] == [round(1 / 3, 6), round(2 / 3, 6), 1.0]  # linear warm-up, then the schedule
    one = lrs("onecycle", epochs=10)
    assert one[0] == 0.1 and max(one) == one[3] and one[-1] < one[0]  # up to the peak at 30%, then down
    with pytest.raises(ConfigError, match="warmup_epochs"):
        TrialConfig(epochs=4, warmup_epochs=4)


@pytest.fixture(scope="module")
def data():
    from ecg_ray.data.prepare import prepare

    return prepare(load_experiment("experiments/quick.yaml", **{"data.n_records": 120}))


def test_the_schedule_sets_the_optimizers_learning_rate_each_epoch(data):
    from ecg_ray.training.loop import build_trial, run_epoch

    torch.set_num_threads(1)
    state = build_trial(TrialConfig(lr=1e-3, hidden_size=8, epochs=4, lr_schedule="step"), data.weights)
    seen = []
    for _ in range(4):
        run_epoch(state, data, 32)
        seen.append(state.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])


def test_gradient_clipping_bounds_the_norm_the_optimizer_sees(data):
    from ecg_ray.training.loop import build_trial, run_epoch

    norms = {}
    for clip in (0.0, 0.01):
        state = build_trial(TrialConfig(lr=1e-3, hidden_size=8, grad_clip=clip), data.weights)
        step, seen = state.optimizer.step, []

        def recording_step(*a, **k):
            seen.append(torch.norm(torch.stack([p.grad.norm() for p in state.model.parameters() if p.grad is not None])).item())
            return step(*a, **k)

        state.optimizer.step = recording_step
        run_epoch(state, data, 32)
        norms[clip] = seen
    assert max(norms[0.01]) <= 0.01 * (1 + 1e-5) < max(norms[0.0])


def test_label_smoothing_changes_the_loss_by_the_known_amount():
    from ecg_ray.training.loop import WeightedCrossEntropy, deterministic_weighted_ce

    torch.manual_seed(0)
    logits, target = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 4, (40,))
    weight = torch.tensor([0.5310278, 0.70645161, 0.56395736, 1.0], dtype=torch.float64)
    eps = 0.1
    logp = torch.log_softmax(logits, 1)
    w = weight[target]
    by_hand = ((1 - eps) * -(w * logp[torch.arange(40), target]) + eps * -(logp * weight).sum(1) / 4).sum() / w.sum()
    smoothed = WeightedCrossEntropy(weight, eps)
    assert smoothed(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-12)
    assert deterministic_weighted_ce(logits, target, weight, eps).item() == pytest.approx(by_hand.item(), rel=1e-12)  # the CUDA path
    plain = WeightedCrossEntropy(weight)
    assert smoothed(logits, target, smoothing=False).item() == plain(logits, target).item()  # val loss: never smoothed
    assert smoothed(logits, target).item() != plain(logits, target).item()


def test_weight_decay_reaches_the_optimizer_and_zero_is_the_notebooks_optimizer():
    from ecg_ray.training.loop import build_trial

    assert build_trial(TrialConfig(hidden_size=8, weight_decay=1e-4), [1.0] * 4).optimizer.param_groups[0]["weight_decay"] == 1e-4
    assert build_trial(TrialConfig(hidden_size=8, optimizer="sgd"), [1.0] * 4).optimizer.param_groups[0]["weight_decay"] == 0.0


def test_a_resume_refuses_a_folder_whose_recorded_draws_differ(tmp_path):
    import json

    from ecg_ray.results.store.folder import ExperimentDir
    from ecg_ray.tuning.driver import pending_trials

    cfg = _cfg(RANDOM, storage_path=str(tmp_path), name="r")
    exp = ExperimentDir.at(str(tmp_path), "r")
    record = {"config": cfg.to_dict(), "grid": [dataclasses.asdict(t) for t in cfg.grid()], "trial_keys": list(cfg.trials())}
    exp.write_record(record, {"ids": {}})
    assert list(pending_trials(cfg, exp, resume=True)) == list(cfg.trials())  # nothing finished: all of them, the same draws
    record["grid"][3]["lr"] = 0.5  # a draw the file would not give now
    (tmp_path / "r" / "ecg_ray_experiment.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="differ from those its experiment file gives now"):
        pending_trials(cfg, exp, resume=True)


@pytest.mark.ray
def test_a_random_search_with_knobs_runs_on_ray_under_asha(ray_local, tmp_path):
    import pandas as pd

    from ecg_ray.commands.main import main

    search = {"algorithm": "random", "num_samples": 3, "lr": {"loguniform": [5e-4, 2e-3]},
              "lr_schedule": {"choice": ["cosine", "onecycle"]}, "grad_clip": {"choice": [0.0, 1.0]},
              "label_smoothing": {"uniform": [0.0, 0.1]}, "hidden_size": 32, "epochs": 2}
    raw = {"name": "rand", "storage_path": str(tmp_path), "data": {"n_records": 160}, "search": search,
           "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}}
    import yaml

    (tmp_path / "rand.yaml").write_text(yaml.safe_dump(raw))
    assert main(["tune", str(tmp_path / "rand.yaml"), "--format", "csv"]) == 0
    trials = pd.read_csv(tmp_path / "rand" / "report" / "trials.csv").sort_values("trial_id")
    drawn = _cfg(search, seed=42).grid()
    assert trials["lr"].tolist() == [t.lr for t in drawn] and trials["lr_schedule"].tolist() == [t.lr_schedule for t in drawn]
    assert trials["label_smoothing"].tolist() == [t.label_smoothing for t in drawn]


def _gru_params(inp, hidden, layers=1, directions=1):
    per_direction = [3 * (i * hidden + hidden * hidden + 2 * hidden) for i in [inp] + [directions * hidden] * (layers - 1)]
    return directions * sum(per_direction)


@pytest.mark.parametrize("shape, gru_input", [
    ({}, 32 * 32),
    ({"bidirectional": True}, 32 * 32),
    ({"gru_layers": 2, "bidirectional": True}, 32 * 32),
    ({"conv_channels": 8}, 16 * 32),
    ({"n_fft": 512, "hop_length": 256}, 32 * 64),
])
def test_model_shape_knobs_give_the_expected_parameter_count_and_run(shape, gru_input):
    trial = TrialConfig(hidden_size=128, **shape)
    model = build_model(trial)
    c1 = shape.get("conv_channels", 16)
    directions = 2 if shape.get("bidirectional") else 1
    convs = (1 * c1 * 9 + c1) + (c1 * 2 * c1 * 9 + 2 * c1)
    expected = convs + _gru_params(gru_input, 128, shape.get("gru_layers", 1), directions) + directions * 128 * 4 + 4
    assert model.num_parameters() == expected
    assert model(torch.randn(3, 9000)).shape == (3, 4)


def test_the_default_shape_is_the_notebooks_model_weight_for_weight():
    from ecg_ray.training.model import ECGModel

    torch.manual_seed(0)
    ours = build_model(TrialConfig(hidden_size=256, dropout=0.3))
    torch.manual_seed(0)
    notebook = ECGModel(256, 0.3)
    assert ours.num_parameters() == 990_404
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), notebook.state_dict().values()))
    with pytest.raises(ConfigError, match="at most n_fft"):
        TrialConfig(n_fft=128, hop_length=256)


def test_class_balance_modes(data):
    from ecg_ray.training.loop import balanced_order, build_trial, run_epoch

    assert build_trial(TrialConfig(hidden_size=8), data.weights).criterion.weight.tolist() == pytest.approx(list(data.weights))
    plain = build_trial(TrialConfig(hidden_size=8, class_balance="none"), data.weights)
    assert plain.criterion.weight.tolist() == [1.0] * 4
    y = torch.from_numpy(data.y["train"])
    order = balanced_order(y, torch.Generator().manual_seed(0))
    drawn = torch.bincount(y[order], minlength=4).double() / len(y)
    assert (drawn - 0.25).abs().max() < 0.1  # every class about a quarter of the epoch, whatever its share of records
    assert torch.bincount(y, minlength=4).max() / len(y) > 0.5  # (Normal is most of the records)
    assert torch.equal(order, balanced_order(y, torch.Generator().manual_seed(0)))
    sampled = build_trial(TrialConfig(hidden_size=8, class_balance="sampler"), data.weights)
    assert sampled.criterion.weight.tolist() == [1.0] * 4 and run_epoch(sampled, data, 32)["train_loss"] > 0


def test_zscore_normalisation_makes_the_model_blind_to_gain_and_offset():
    torch.manual_seed(0)
    model = build_model(TrialConfig(hidden_size=16, normalize="zscore")).eval()
    x = torch.randn(4, 9000) * 200
    with torch.no_grad():
        assert torch.allclose(model(x), model(3 * x + 500), atol=1e-4)
        plain = build_model(TrialConfig(hidden_size=16)).eval()
        assert not torch.allclose(plain(x), plain(3 * x + 500), atol=1e-4)


# --- the data knobs: target_length and train_crop -------------------------------------------------


@pytest.fixture(scope="module")
def whole_data():
    """Data prepared with the whole records kept (the search lists train_crop: random)."""
    from ecg_ray.data.prepare import prepare

    return prepare(_cfg({"train_crop": ["centre", "random"], "hidden_size": 8}, data={"n_records": 120, "difficulty": "easy"}),
                   use_cache=False)


def test_whole_records_are_kept_only_when_a_trial_cuts_its_own_windows(whole_data):
    from ecg_ray.data.prepare import whole_records_needed

    assert not whole_records_needed(_cfg({"lr": [1e-3, 5e-4]}))
    assert not whole_records_needed(_cfg({"target_length": [0, 9000]}))
    assert whole_records_needed(_cfg({"target_length": [6000, 9000]}))
    assert whole_records_needed(_cfg({"algorithm": "random", "num_samples": 2, "target_length": {"randint": [6000, 12000]}}))
    longest = max(int(n.max()) for n in whole_data.lengths.values())
    for split, whole in whole_data.whole.items():
        lengths = whole_data.lengths[split]
        assert whole.shape[1] == longest > 9000 and (whole[np.arange(len(whole)), lengths - 1] != 0).any()


def test_a_trial_at_the_datas_length_trains_as_the_notebook_did_bit_for_bit(data, whole_data):
    from ecg_ray.training.loop import build_trial, run_epoch

    plain = run_epoch(build_trial(TrialConfig(hidden_size=8), data.weights), data, 32)
    at_9000 = run_epoch(build_trial(TrialConfig(hidden_size=8, target_length=9000), whole_data.weights), whole_data, 32)
    assert plain == at_9000 and data.data_hash == whole_data.data_hash  # the same records, split and windows


def test_another_target_length_cuts_centre_windows_for_val_and_test(whole_data):
    from ecg_ray.data.prepare import pad_or_trim
    from ecg_ray.training.loop import split_array

    lengths = whole_data.lengths["val"]
    signals = [w[:n] for w, n in zip(whole_data.whole["val"], lengths)]
    for length in (6000, 12000):
        got = split_array(whole_data, TrialConfig(target_length=length, train_crop="random"), "val")
        assert got.shape == (len(lengths), length) and np.array_equal(got, pad_or_trim(signals, length))


def test_random_crops_are_windows_inside_each_record_fresh_each_epoch_and_seeded():
    from ecg_ray.training.loop import _batches, random_starts

    lengths = torch.tensor([9000, 12000, 5000, 18000])
    whole = torch.arange(4 * 18000, dtype=torch.float32).reshape(4, 18000)
    g = torch.Generator().manual_seed(1)
    first, second = random_starts(lengths, 9000, g), random_starts(lengths, 9000, g)
    assert torch.equal(first, random_starts(lengths, 9000, torch.Generator().manual_seed(1)))  # seeded
    assert not torch.equal(first, second)  # a fresh window each epoch
    assert first[0] == first[2] == 0 and 0 <= first[1] <= 3000 and 0 <= first[3] <= 9000
    (xb, yb), = _batches(whole, torch.arange(4), torch.tensor([3, 1, 0, 2]), 4, "cpu", first, 9000)
    for row, i in enumerate([3, 1, 0, 2]):
        assert torch.equal(xb[row], whole[i, first[i]:first[i] + 9000]) and yb[row] == i


def test_a_random_crop_trial_resumed_from_its_checkpoint_continues_bit_for_bit(whole_data):
    import copy

    from ecg_ray.training.loop import build_trial, load_state_dict, run_epoch, state_dict

    trial = TrialConfig(hidden_size=8, train_crop="random", target_length=6000)
    straight = build_trial(trial, whole_data.weights)
    run_epoch(straight, whole_data, 32)
    saved = copy.deepcopy(state_dict(straight))  # as written to the checkpoint, not views of live tensors
    expected = run_epoch(straight, whole_data, 32)
    resumed = build_trial(trial, whole_data.weights)
    load_state_dict(resumed, saved)
    assert run_epoch(resumed, whole_data, 32) == expected


@pytest.mark.parametrize("search, message", [
    ({"target_length": 100}, "The 'target_length' parameter must be 0 (the data's length) or at least n_fft (256)"),
    ({"train_crop": "left"}, "The 'train_crop' parameter must be one of 'centre', 'random'"),
])
def test_bad_data_knobs_are_refused(search, message):
    with pytest.raises(ConfigError) as err:
        _cfg(search)
    assert message in str(err.value)


@pytest.mark.parametrize("name", ["grid", "extended"])
def test_the_search_evidence_experiments_read(name):
    cfg = load_experiment(f"benchmarks/search_evidence/{name}.yaml", **{"data.path": "training2017"})
    assert cfg.epochs == 15 and cfg.scheduler.grace_period == 3 and cfg.n_trials == {"grid": 16, "extended": 24}[name]
