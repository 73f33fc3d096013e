"""The faster trial loop (data resident on the device, no host sync per step, validation in
batches of 256) gives the same numbers, bit for bit on CPU, as the loop it replaced."""

import numpy as np
import pytest
import torch
from test_train import _one_thread, data  # noqa: F401  (the same fixtures: 240 records, one torch thread)

from ecg_ray.config import TrialConfig
from ecg_ray.training.loop import EVAL_BATCH, build_trial, classification_metrics, evaluate, on_device, run_epoch, shuffled_order


def _previous_epoch(state, data, batch_size):
    """The loop as it was before (commit d20fa72): numpy batches, loss.item() every step, val at batch 32."""
    def batches(x, y, order):
        for start in range(0, len(order), batch_size):
            idx = np.asarray(order[start : start + batch_size])
            yield torch.from_numpy(x[idx]), torch.from_numpy(y[idx])

    metrics = {"epoch": state.epoch + 1}
    state.model.train()
    total_loss, correct = 0.0, 0
    x, y = data.x["train"], data.y["train"]
    for xb, yb in batches(x, y, shuffled_order(len(y), state.generator)):
        state.optimizer.zero_grad()
        out = state.model(xb)
        loss = state.criterion(out, yb)
        loss.backward()
        state.optimizer.step()
        total_loss += loss.item() * len(yb)
        correct += (out.argmax(1) == yb).sum().item()
    state.epoch += 1
    metrics |= {"train_loss": total_loss / len(y), "train_acc": correct / len(y)}
    with torch.no_grad():
        torch.empty((), dtype=torch.int64).random_()
        state.model.eval()
        x, y = data.x["val"], data.y["val"]
        logits = torch.cat([state.model(xb) for xb, _ in batches(x, y, np.arange(len(y)))])
        loss = state.criterion(logits, torch.from_numpy(y)).item()
        pred = logits.argmax(1).numpy()
    metrics |= {"val_loss": loss, **{f"val_{k}": v for k, v in classification_metrics(y, pred).items()}}
    return metrics


@pytest.mark.parametrize("optimizer, dropout", [("adam", 0.3), ("sgd", 0.2)])
def test_the_faster_loop_gives_the_previous_loops_numbers_bit_for_bit(data, optimizer, dropout):
    trial = TrialConfig(lr=1e-3, hidden_size=32, dropout=dropout, optimizer=optimizer)
    new, old = build_trial(trial, data.weights), None
    ours = [run_epoch(new, data, trial.batch_size) for _ in range(3)]
    old = build_trial(trial, data.weights)
    before = [_previous_epoch(old, data, trial.batch_size) for _ in range(3)]
    assert ours == before  # every metric, train loss and accuracy included, as exact floats


def test_validation_batch_size_does_not_change_the_logits_on_cpu(data):
    state = build_trial(TrialConfig(hidden_size=64), data.weights)
    x, y = on_device(state, data, "val")
    rng = torch.get_rng_state()
    at_32 = evaluate(state, x, y, batch_size=32)
    torch.set_rng_state(rng)
    assert evaluate(state, x, y, batch_size=EVAL_BATCH) == at_32 and EVAL_BATCH > 32


def test_splits_are_made_tensors_once_per_trial_and_are_views_on_cpu(data):
    state = build_trial(TrialConfig(hidden_size=16, epochs=2), data.weights)
    run_epoch(state, data, 32)
    x, _ = state.resident["train", False]
    run_epoch(state, data, 32)
    assert state.resident["train", False][0] is x  # not rebuilt for the second epoch
    assert x.data_ptr() == data.x["train"].__array_interface__["data"][0]  # no copy on CPU


# --- the options that change the numbers, off by default --------------------------------------


def test_bf16_autocast_trains_close_to_fp32_and_is_deterministic(data):
    fp32 = run_epoch(build_trial(TrialConfig(hidden_size=16), data.weights), data, 32)
    bf16 = [run_epoch(build_trial(TrialConfig(hidden_size=16, precision="bf16"), data.weights), data, 32) for _ in range(2)]
    assert bf16[0] == bf16[1]  # the same numbers each run, on CPU
    assert bf16[0]["train_loss"] != fp32["train_loss"] and abs(bf16[0]["train_loss"] - fp32["train_loss"]) < 0.05


def test_channels_last_trains_close_to_the_default_and_is_deterministic(data):
    default = run_epoch(build_trial(TrialConfig(hidden_size=16), data.weights), data, 32)
    runs = [run_epoch(build_trial(TrialConfig(hidden_size=16, channels_last=True), data.weights), data, 32) for _ in range(2)]
    assert runs[0] == runs[1]  # the same numbers each run, on CPU
    # Labelled "changes the numbers": the convolutions sum in another order (the last bits differ).
    assert abs(runs[0]["train_loss"] - default["train_loss"]) < 1e-3


def test_compile_keeps_the_checkpoint_keys_and_is_deterministic(data):
    from ecg_ray.training.loop import state_dict

    def one_epoch(**options):  # build and run one trial at a time: they share torch's global generator
        state = build_trial(TrialConfig(hidden_size=8, **options), data.weights)
        return state_dict(state)["model"].keys(), run_epoch(state, data, 32)

    (eager_keys, a), (keys, b), (_, c) = one_epoch(), one_epoch(compile=True), one_epoch(compile=True)
    assert keys == eager_keys  # predict loads a compiled trial's checkpoint as it is
    assert b == c  # deterministic on CPU
    # Labelled "changes the numbers": fused kernels may round differently (here on CPU it matched eager).
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-3 and a["val_confusion"] == b["val_confusion"]
