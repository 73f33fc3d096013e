"""The per-trial loop without Ray: learning, determinism, notebook parity, exact resume."""

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from torch.utils.data import DataLoader, TensorDataset

from ecg_ray.config import TrialConfig, load_experiment
from ecg_ray.data.prepare import prepare
from ecg_ray.training.model import NotebookECGModel
from ecg_ray.training.loop import OPTIMIZERS, build_trial, classification_metrics, load_state_dict, run_epoch, state_dict

TIMING = {"epoch_time_s"}


@pytest.fixture(scope="module")
def data():
    return prepare(load_experiment("experiments/quick.yaml", **{"data.n_records": 240}))


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _run(trial, data, epochs):
    state = build_trial(trial, data.weights)
    return [run_epoch(state, data, trial.batch_size) for _ in range(epochs)]


def test_loss_falls_on_synthetic_data():
    data = prepare(load_experiment("experiments/quick.yaml"))
    history = _run(TrialConfig(lr=1e-3, hidden_size=128, dropout=0.2), data, 4)
    assert history[-1]["train_loss"] < 0.95 * history[0]["train_loss"]
    assert history[-1]["val_macro_f1"] > history[0]["val_macro_f1"]


def test_same_trial_twice_is_bit_identical(data):
    trial = TrialConfig(lr=1e-3, hidden_size=32, dropout=0.3, optimizer="sgd")
    assert _run(trial, data, 2) == _run(trial, data, 2)


def test_a_trial_does_not_depend_on_what_ran_before(data):
    trial = TrialConfig(lr=5e-4, hidden_size=32, dropout=0.2)
    first = _run(trial, data, 1)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(9)
    _run(TrialConfig(lr=1e-2, hidden_size=16, dropout=0.0, optimizer="sgd"), data, 1)
    assert _run(trial, data, 1) == first


def _notebook(data, lr, hidden, dropout, opt, epochs, seed=42, batch_size=32):
    """A plain re-implementation of the notebook's loop, with DataLoader and sklearn."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    model = NotebookECGModel(hidden_size=hidden, dropout_rate=dropout)  # its conv blocks as the notebook wrote them
    g = torch.Generator()
    g.manual_seed(seed)
    train_loader = DataLoader(
        TensorDataset(torch.tensor(data.x["train"]), torch.tensor(data.y["train"])),
        batch_size=batch_size, shuffle=True, generator=g,
    )
    val_loader = DataLoader(TensorDataset(torch.tensor(data.x["val"]), torch.tensor(data.y["val"])), batch_size=batch_size)
    criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor(data.weights))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr) if opt == "adam" else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    out = []
    for _ in range(epochs):
        model.train()
        for xb, yb in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
        model.eval()
        logits, ys = [], []
        with torch.no_grad():
            for xb, yb in val_loader:
                logits.append(model(xb))
                ys.append(yb)
        logits, ys = torch.cat(logits), torch.cat(ys)
        pred = logits.argmax(1).numpy()
        out.append({
            "val_loss": criterion(logits, ys).item(),
            "val_acc": float((pred == ys.numpy()).mean()),
            "val_macro_f1": float(f1_score(ys.numpy(), pred, average="macro", labels=[0, 1, 2, 3], zero_division=0)),
        })
    return out


@pytest.mark.parametrize("opt, dropout", [("adam", 0.3), ("sgd", 0.2)])
def test_parity_with_the_notebooks_loop(data, opt, dropout):
    reference = _notebook(data, 1e-3, 32, dropout, opt, epochs=3)
    ours = _run(TrialConfig(lr=1e-3, hidden_size=32, dropout=dropout, optimizer=opt), data, 3)
    assert [{k: m[k] for k in reference[0]} for m in ours] == reference


def test_checkpoint_resume_is_bit_identical(data, tmp_path):
    trial = TrialConfig(lr=1e-3, hidden_size=32, dropout=0.3)
    straight = _run(trial, data, 3)
    state = build_trial(trial, data.weights)
    resumed = [run_epoch(state, data, trial.batch_size)]
    torch.save(state_dict(state), tmp_path / "ckpt.pt")
    # Scramble every RNG, as a fresh worker process would have them.
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    state = build_trial(replace(trial, seed=7), data.weights)
    load_state_dict(state, torch.load(tmp_path / "ckpt.pt", weights_only=False))
    assert state.epoch == 1
    resumed += [run_epoch(state, data, trial.batch_size) for _ in range(2)]
    assert resumed == straight


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_and_reports_all_metrics(data, name):
    (m,) = _run(TrialConfig(lr=1e-3, hidden_size=16, optimizer=name), data, 1)
    assert m["epoch"] == 1 and np.isfinite(m["train_loss"]) and np.isfinite(m["val_loss"])
    for key in ("val_macro_f1", "val_challenge_f1", "val_acc", "train_acc"):
        assert 0.0 <= m[key] <= 1.0
    for k in ("N", "A", "O", "noisy"):
        assert {f"val_f1_{k}", f"val_precision_{k}", f"val_recall_{k}"} <= m.keys()
    cm = np.array(m["val_confusion"])
    assert cm.shape == (4, 4) and cm.sum() == len(data.y["val"])
    np.testing.assert_array_equal(cm.sum(1), np.bincount(data.y["val"], minlength=4))
    assert m["val_challenge_f1"] == pytest.approx(np.mean([m["val_f1_N"], m["val_f1_A"], m["val_f1_O"]]))


def test_classification_metrics_equal_sklearns_bit_for_bit():
    """The worker computes the metrics without scikit-learn (its import was 0.7 s of every trial's
    start-up): the same numbers, compared with ==, including classes never true or never predicted."""
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 4, n) for n in (1, 7, 160, 927)] + [np.zeros(50, int), np.arange(4).repeat(3)]
    for y_true in cases:
        for y_pred in (rng.integers(0, 4, len(y_true)), np.zeros(len(y_true), int), y_true.copy(),
                       rng.choice([0, 2], len(y_true))):
            ours = classification_metrics(y_true, y_pred)
            p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
            assert ours["confusion"] == confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3]).tolist()
            assert ours["macro_f1"] == float(f1.mean()) == f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
            assert ours["challenge_f1"] == float(f1[:3].mean())
            assert [ours[k] for k in ours if k.startswith("precision_")] == p.tolist()
            assert [ours[k] for k in ours if k.startswith("recall_")] == r.tolist()
            assert [ours[k] for k in ours if k.startswith("f1_")] == f1.tolist()
