"""Augmentation of training batches: each kind deterministic for a seed, changing the signal by the
stated kind and amount, off by default, never touching validation data, and resumed bit for bit."""

import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_train import _one_thread, data  # noqa: F401  (240 records, one torch thread)

from ecg_ray.training.augment import augment, enabled, generator
from ecg_ray.config import TrialConfig
from ecg_ray.training.loop import build_trial, load_state_dict, run_epoch, state_dict

N = 3000


def _batch(b=64):
    torch.manual_seed(0)
    return torch.randn(b, N) * 300.0 + 50.0


def _only(name, s, p=1.0):
    return TrialConfig(**{f"aug_{name}_p": p, f"aug_{name}": s})


@pytest.mark.parametrize("name, s", [("scale", 0.2), ("noise", 0.1), ("stretch", 0.1), ("burst", 0.1), ("wander", 0.5)])
def test_each_augmentation_is_deterministic_for_a_seed_and_changes_the_batch(name, s):
    trial, x = _only(name, s), _batch()
    a = augment(x, trial, generator(trial, "cpu"))
    b = augment(x, trial, generator(trial, "cpu"))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape
    assert not torch.equal(a, augment(x, replace(trial, seed=7), generator(replace(trial, seed=7), "cpu")))
    half = augment(x, replace(trial, **{f"aug_{name}_p": 0.5}), generator(trial, "cpu"))
    untouched = (half == x).all(1)
    assert 0 < untouched.sum() < len(x)  # p = 0.5: some records augmented, some not


def test_scale_multiplies_each_record_within_the_strength():
    x = _batch()
    ratio = augment(x, _only("scale", 0.2), generator(_only("scale", 0.2), "cpu")) / x
    per_record = ratio[:, :1]
    assert torch.allclose(ratio, per_record.expand_as(ratio), rtol=1e-5)  # one factor per record
    assert ((per_record >= 0.8 - 1e-6) & (per_record <= 1.2 + 1e-6)).all() and per_record.std() > 0.05


def test_noise_has_the_stated_share_of_the_records_sd():
    x = _batch(256)
    added = augment(x, _only("noise", 0.1), generator(_only("noise", 0.1), "cpu")) - x
    assert added.std(1).div(x.std(1)).mean().item() == pytest.approx(0.1, rel=0.02)


def test_burst_zeroes_one_stretch_of_the_stated_length():
    x = _batch()
    out = augment(x, _only("burst", 0.1), generator(_only("burst", 0.1), "cpu"))
    zeroed = (out == 0) & (x != 0)
    assert (zeroed.sum(1) == round(0.1 * N)).all()
    for row in zeroed:
        idx = torch.nonzero(row).ravel()
        assert idx[-1] - idx[0] + 1 == len(idx)  # contiguous


def test_stretch_changes_the_heart_rate_by_the_drawn_rate():
    fs, f0 = 300, 5.0
    t = torch.arange(N) / fs
    x = torch.sin(2 * math.pi * f0 * t).repeat(32, 1) * 1000
    out = augment(x, _only("stretch", 0.1), generator(_only("stretch", 0.1), "cpu"))
    spectrum = torch.fft.rfft(out[:, : N // 2], dim=1).abs()  # the first half is always signal, never padding
    freqs = torch.fft.rfftfreq(N // 2, 1 / fs)
    peak = freqs[spectrum.argmax(1)]
    assert ((peak >= f0 * 0.9 - 0.25) & (peak <= f0 * 1.1 + 0.25)).all() and peak.std() > 0.05


def test_wander_adds_a_slow_wave_of_the_stated_amplitude():
    x = torch.zeros(16, N) + torch.randn(16, N)  # sd 1
    added = augment(x, _only("wander", 0.5), generator(_only("wander", 0.5), "cpu")) - x
    sd = x.std(1)
    assert (added.abs().max(1).values <= 0.5 * sd + 1e-4).all()
    slow = torch.fft.rfft(added, dim=1).abs().argmax(1)  # the dominant frequency bin
    assert (torch.fft.rfftfreq(N, 1 / 300)[slow] <= 0.6).all()


def test_off_by_default_and_the_notebooks_numbers_are_untouched(data):
    assert not enabled(TrialConfig()) and not enabled(TrialConfig(aug_noise_p=1.0))  # a probability alone does nothing
    assert build_trial(TrialConfig(hidden_size=8), data.weights).aug_generator is None


def test_augmentation_trains_on_changed_batches_but_never_touches_validation(data):
    before = {s: data.x[s].copy() for s in data.x}
    plain = build_trial(TrialConfig(hidden_size=16, dropout=0.0), data.weights)
    aug = build_trial(TrialConfig(hidden_size=16, dropout=0.0, aug_noise_p=1.0, aug_noise=0.5), data.weights)
    p, a = run_epoch(plain, data, 32), run_epoch(aug, data, 32)
    assert p["train_loss"] != a["train_loss"]
    assert all(np.array_equal(before[s], data.x[s]) for s in data.x)  # the arrays themselves never change
    # Validation: the same weights give the same val metrics with or without augmentation configured.
    aug.model.load_state_dict(plain.model.state_dict())
    from ecg_ray.training.loop import evaluate, on_device

    rng = torch.get_rng_state()
    val_plain = evaluate(plain, *on_device(plain, data, "val"))
    torch.set_rng_state(rng)
    assert evaluate(aug, *on_device(aug, data, "val")) == val_plain


def test_a_resumed_augmented_trial_is_bit_identical(data, tmp_path):
    trial = TrialConfig(hidden_size=16, dropout=0.2, aug_scale_p=0.5, aug_scale=0.2, aug_stretch_p=0.5, aug_stretch=0.1,
                        aug_burst_p=0.3, aug_burst=0.05)
    straight_state = build_trial(trial, data.weights)
    straight = [run_epoch(straight_state, data, 32) for _ in range(3)]
    state = build_trial(trial, data.weights)
    resumed = [run_epoch(state, data, 32)]
    torch.save(state_dict(state), tmp_path / "ckpt.pt")
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    state = build_trial(replace(trial, seed=7), data.weights)  # a fresh process: other generators everywhere
    load_state_dict(state, torch.load(tmp_path / "ckpt.pt", weights_only=True))
    resumed += [run_epoch(state, data, 32) for _ in range(2)]
    assert resumed == straight
