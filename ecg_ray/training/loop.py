"""One trial's training, in plain PyTorch: seeding, epochs, metrics, checkpoint state.

    python -c "from ecg_ray.training.loop import OPTIMIZERS; print(sorted(OPTIMIZERS))"

No Ray here: ecg_ray.tuning.trial wraps these functions in a Ray Train worker, and
the tests call them directly. The epoch reproduces the notebook's loop over a
`DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))`
without building one: the same draws from the same generator, batches
indexed straight from the prepared float32 array.
"""

from __future__ import annotations

import math
import os
import random
import threading
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ecg_ray.models import build_model, get_model
from ecg_ray import provenance
from ecg_ray.training import augment
from ecg_ray.config import CUBLAS_WORKSPACE, TrialConfig
from ecg_ray.data.prepare import centre_windows
from ecg_ray.errors import EcgRayError
from ecg_ray.schema import CLASS_KEYS, NUM_CLASSES

SGD_MOMENTUM = 0.9

CHECKPOINT_FORMAT = 1

OPTIMIZERS = {  # weight_decay 0 (the default) takes the same path as the notebook's optimizers
    "adam": lambda params, lr, weight_decay=0.0: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
    "sgd": lambda params, lr, weight_decay=0.0: torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay),
}


def _constant(t: float) -> float:
    return 1.0


def _cosine(t: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _step(t: float) -> float:
    return 0.1 ** ((t >= 0.5) + (t >= 0.75))  # x0.1 at half and at three quarters of the epochs


def _onecycle(t: float) -> float:
    # Up from 0.1x to 1x over the first 30% of the epochs, then cosine down to 0.01x (per epoch).
    if t < 0.3:
        return 0.1 + 0.9 * t / 0.3
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * (t - 0.3) / 0.7))


# lr_schedule name -> factor of the base lr at fraction t in [0, 1) of the epochs after warm-up.
LR_SCHEDULES = {"constant": _constant, "cosine": _cosine, "onecycle": _onecycle, "step": _step}


def lr_factor(trial, epoch: int) -> float:
    """The factor of trial.lr for `epoch` (0-based): linear warm-up over warmup_epochs, then the schedule.

    Per epoch and a pure function of the epoch, so a resumed trial needs no scheduler state.
    """
    if epoch < trial.warmup_epochs:
        return (epoch + 1) / (trial.warmup_epochs + 1)
    span = max(1, trial.epochs - trial.warmup_epochs)
    return LR_SCHEDULES[trial.lr_schedule]((epoch - trial.warmup_epochs) / span)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and turn on deterministic algorithms."""
    # cuBLAS reads this when CUDA starts; ecg_ray.tuning.trial also sets it in the worker's runtime env.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def deterministic_weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                              label_smoothing: float = 0.0) -> torch.Tensor:
    """Class-weighted mean cross-entropy from elementwise ops and plain reductions only.

    Equal (up to float rounding) to F.cross_entropy(logits, target, weight=weight,
    label_smoothing=label_smoothing): with smoothing e over C classes, each sample's loss is
    (1 - e) w_y (-log p_y) + e / C sum_c w_c (-log p_c), and the mean divides by sum of w_y.
    """
    logp = torch.log_softmax(logits, dim=1)  # (batch, 4)
    onehot = (target[:, None] == torch.arange(logits.shape[1], device=logits.device)).to(logp.dtype)
    w = onehot @ weight  # (batch,) weight of each sample's class
    nll = -(w * (onehot * logp).sum(1))
    if label_smoothing:
        smooth = -(logp * weight).sum(1) / logits.shape[1]
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return nll.sum() / w.sum()


class WeightedCrossEntropy(nn.Module):
    """The notebook's nn.CrossEntropyLoss(weight=...), deterministic on GPU too.

    torch.use_deterministic_algorithms(True) refuses NLLLoss on CUDA tensors (it has no
    deterministic CUDA kernel), so on CUDA the same formula is computed from deterministic
    ops. On CPU it is nn.CrossEntropyLoss itself, bit for bit the notebook's loss.
    """

    def __init__(self, weight: torch.Tensor, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, smoothing: bool = True) -> torch.Tensor:
        """The loss; `smoothing=False` leaves label smoothing out (the validation loss)."""
        eps = self.label_smoothing if smoothing else 0.0
        if logits.is_cuda:
            return deterministic_weighted_ce(logits, target, self.weight, eps)
        if eps:
            return nn.functional.cross_entropy(logits, target, weight=self.weight, label_smoothing=eps)
        return nn.functional.cross_entropy(logits, target, weight=self.weight)


@dataclass
class TrialState:
    """What one trial carries from epoch to epoch (and what a checkpoint restores)."""

    model: torch.nn.Module  # the trial's model (ecg_ray.models), on `device`
    optimizer: torch.optim.Optimizer
    criterion: WeightedCrossEntropy
    generator: torch.Generator  # the shuffling generator, separate from the global RNG
    device: torch.device
    trial: TrialConfig  # its schedule, clipping, augmentation and the like
    aug_generator: torch.Generator | None = None  # the augmentation draws (None: no augmentation)
    fs: int = 300  # the data's sampling rate (augmentation's baseline wander is in Hz)
    epoch: int = 0  # epochs completed
    resident: dict = field(default_factory=dict)  # the data's splits as tensors on `device` (see on_device)


def build_trial(trial, weights: np.ndarray, device: torch.device | str = "cpu") -> TrialState:
    """Seed, then build the model, optimizer, weighted loss and shuffling generator of a trial.

    Args:
        trial: a TrialConfig (lr, hidden_size, dropout, optimizer, seed).
        weights: (4,) class weights for the cross-entropy loss.
        device: where the model lives.
    """
    device = torch.device(device)
    seed_everything(trial.seed)
    model = build_model(trial).to(device)
    if trial.compile:
        model.compile()  # in place: the state dict keeps its keys, so checkpoints and predict are unchanged
    optimizer = OPTIMIZERS[trial.optimizer](model.parameters(), trial.lr, trial.weight_decay)
    if trial.class_balance != "weighted_loss":
        weights = np.ones(len(weights), dtype=np.float32)  # sampler or none: a plain loss
    # A copy: the weights a worker gets from Ray's object store are read-only, which torch warns about.
    criterion = WeightedCrossEntropy(torch.tensor(np.array(weights, dtype=np.float32), device=device), trial.label_smoothing)
    generator = torch.Generator().manual_seed(trial.seed)
    aug = augment.generator(trial, device) if augment.enabled(trial) else None
    return TrialState(model, optimizer, criterion, generator, device, trial, aug)


def shuffled_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """This epoch's sample order, drawn exactly as DataLoader(shuffle=True, generator=g) draws it.

    Per epoch the DataLoader draws a base seed, RandomSampler draws randperm(n), and when
    the sampler is exhausted it draws one more randperm(n) for the (empty) remainder.
    """
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)
    return order


# Inference batch for the validation pass on a GPU, which runs far fewer, fuller kernels; the
# logits equal those at batch 32 bit for bit on CPU (tests/test_loop.py checks).
EVAL_BATCH = 256
# A split stays on the GPU for the whole trial when it takes at most this share of the free memory;
# otherwise it stays in pinned host memory and each batch is copied without blocking.
RESIDENT_SHARE = 0.5


def trial_length(trial, settings: dict) -> int:
    """The samples per record a trial sees: its target_length, or that of the data `settings` (the
    prepared data's, or those a checkpoint recorded)."""
    return trial.target_length or int(settings["target_length"])


def _check_whole(data, trial, needs: str) -> None:
    """Refuse a trial that cuts its own windows from data prepared without the whole records."""
    if data.whole is None:
        raise EcgRayError(f"Trial {trial} {needs}, but the data was prepared without the whole records: "
                          "prepare it from this experiment (its search lists target_length or train_crop).")


def split_array(data, trial, split: str) -> np.ndarray:
    """The split's records as the trial sees them (centre windows of its length): the prepared
    array itself at the data's length, else windows cut from the whole records."""
    length = trial_length(trial, data.meta.settings)
    if data.x[split].shape[1] == length:
        return data.x[split]
    _check_whole(data, trial, f"asks for target_length {length} (the data has {data.x[split].shape[1]})")
    return centre_windows(data.whole[split], data.lengths[split], length)


def on_device(state: TrialState, data, split: str, whole: bool = False) -> tuple[torch.Tensor, ...]:
    """The split's (x, y) as tensors on the trial's device, made once per trial and data: the
    trial's centre windows, or with `whole` (train_crop: random) (whole records, y, lengths).

    On CPU these are views of the arrays (no copy); on a GPU one copy per trial replaces
    one host-to-device copy per batch.
    """
    if state.resident.get("data") is not data:
        state.resident = {"data": data}
    key = (split, whole)
    if key not in state.resident:
        if whole:
            _check_whole(data, state.trial, "crops at random")
        arrays = (data.whole[split], data.y[split], data.lengths[split]) if whole else (split_array(data, state.trial, split), data.y[split])
        with warnings.catch_warnings():  # arrays from Ray's object store are read-only; nothing here writes
            warnings.simplefilter("ignore", UserWarning)
            tensors = tuple(torch.from_numpy(a) for a in arrays)
        if state.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(state.device)
            if sum(t.nbytes for t in tensors) <= free * RESIDENT_SHARE:
                tensors = tuple(t.to(state.device) for t in tensors)
            else:
                tensors = tuple(t.pin_memory() for t in tensors)
        state.resident[key] = tensors
    return state.resident[key]


def random_starts(lengths: torch.Tensor, window: int, generator: torch.Generator) -> torch.Tensor:
    """Where each record's training window starts this epoch: uniform over the positions that keep
    it inside the record (0 for a record no longer than the window, which is padded)."""
    room = (lengths.cpu() - window).clamp(min=0) + 1
    return (torch.rand(len(room), generator=generator, dtype=torch.float64) * room).long()


def balanced_order(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(y) draws with replacement, each class equally likely (class_balance: sampler), from the
    trial's shuffling generator (so a resume continues the same draws)."""
    labels = y.cpu()
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1).double()
    per_record = (1.0 / counts)[labels]
    return torch.multinomial(per_record, len(labels), replacement=True, generator=generator)


def _batches(x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int, device,
             starts: torch.Tensor | None = None, window: int = 0):
    """Batches in `order`; with `starts`, the `window` samples of each record from its start."""
    order = order.to(x.device)
    if starts is not None:
        starts, offsets = starts.to(x.device), torch.arange(window, device=x.device)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        xb = x[idx] if starts is None else x[idx].gather(1, starts[idx, None] + offsets)
        yield xb.to(device, non_blocking=True), y[idx].to(device, non_blocking=True)


class TrialStopped(Exception):
    """Raised by train_epoch when its `stop` event is set: the trial ends here (Tune stopped it)."""


def train_epoch(state: TrialState, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                lengths: torch.Tensor | None = None, window: int = 0, stop: threading.Event | None = None) -> dict:
    """One pass over the training set in seeded random order. Returns train_loss and train_acc.

    With `lengths` (train_crop: random), `x` holds the whole records and each epoch trains on a
    fresh `window`-sample window of each, drawn from the trial's shuffling generator.
    With `stop`, each batch first checks it and raises TrialStopped once it is set.
    The running loss and count stay on the device (float64 and int64: the same sums, bit
    for bit, as adding `loss.item() * n` in Python), so no step waits for the GPU.
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    trial = state.trial
    for group in state.optimizer.param_groups:  # a constant schedule without warm-up: exactly trial.lr
        group["lr"] = trial.lr * lr_factor(trial, state.epoch)
    state.model.train()
    total_loss = torch.zeros((), dtype=torch.float64, device=state.device)
    correct = torch.zeros((), dtype=torch.int64, device=state.device)
    order = balanced_order(y, state.generator) if trial.class_balance == "sampler" else shuffled_order(len(y), state.generator)
    starts = random_starts(lengths, window, state.generator) if lengths is not None else None
    for xb, yb in _batches(x, y, order, batch_size, state.device, starts, window):
        if stop is not None and stop.is_set():
            raise TrialStopped(f"stopped during epoch {state.epoch + 1}")
        if state.aug_generator is not None:
            xb = augment.augment(xb, trial, state.aug_generator, state.fs)
        state.optimizer.zero_grad()
        with autocast(state.device, trial):
            out = state.model(xb).float()
        loss = state.criterion(out, yb)
        loss.backward()
        if trial.grad_clip:
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), trial.grad_clip)
        state.optimizer.step()
        total_loss += loss.detach().double() * len(yb)
        correct += (out.argmax(1) == yb).sum()
    state.epoch += 1
    return {"train_loss": total_loss.item() / len(y), "train_acc": correct.item() / len(y)}


def autocast(device: torch.device, trial):
    """bfloat16 autocast for `precision: bf16` (a no-op context for fp32, the default)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=trial.precision == "bf16")


@torch.no_grad()
def infer(model: nn.Module, x: torch.Tensor, batch_size: int, device, trial=None) -> torch.Tensor:
    """The model's fp32 logits for every record of `x`, in batches of `batch_size` moved to `device`
    (under the trial's precision, when given)."""
    device = torch.device(device)
    with autocast(device, trial or TrialConfig()):
        return torch.cat([model(x[i : i + batch_size].to(device, non_blocking=True)).float() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def evaluate(state: TrialState, x, y, batch_size: int = EVAL_BATCH, prefix: str = "val") -> dict:
    """Loss, accuracy, macro-F1, per-class precision/recall/F1, challenge F1 and confusion matrix.

    `x`, `y`: tensors (as `on_device` gives them) or numpy arrays.
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    # The notebook's unshuffled val DataLoader draws a base seed from the global RNG on every
    # pass; draw it too so later dropout masks match the notebook's exactly.
    torch.empty((), dtype=torch.int64).random_()
    state.model.eval()
    logits = infer(state.model, x, batch_size, state.device, state.trial)
    target = y.to(state.device)
    loss = state.criterion(logits, target, smoothing=False).item()
    pred = logits.argmax(1).cpu().numpy()
    return {f"{prefix}_loss": loss, **{f"{prefix}_{k}": v for k, v in classification_metrics(y.cpu().numpy(), pred).items()}}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, macro-F1, challenge F1 (mean F1 of N, A, O), per-class P/R/F1, confusion matrix.

    scikit-learn's numbers to the bit (precision_recall_fscore_support(labels=0..3,
    zero_division=0) and confusion_matrix: tests/test_train.py compares them), computed with the
    same float64 operations: importing sklearn.metrics was 0.7 s of every trial's start-up.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    confusion = np.bincount(NUM_CLASSES * y_true + y_pred, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
    tp, pred_sum, true_sum = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision, recall = _divide(tp, pred_sum), _divide(tp, true_sum)
    f1 = _divide(2.0 * tp, 1.0 * true_sum + pred_sum)  # sklearn's (1 + b^2) tp / (b^2 true + pred), b = 1
    out = {
        "acc": float((y_true == y_pred).mean()),
        "macro_f1": float(f1.mean()),
        "challenge_f1": float(f1[:3].mean()),
        "confusion": confusion.tolist(),
    }
    for i, key in enumerate(CLASS_KEYS):
        out[f"precision_{key}"] = float(precision[i])
        out[f"recall_{key}"] = float(recall[i])
        out[f"f1_{key}"] = float(f1[i])
    return out


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den in float64, 0 where den is 0 (sklearn's zero_division=0)."""
    den = np.asarray(den, dtype=np.float64)
    return np.where(den == 0, 0.0, np.asarray(num, dtype=np.float64) / np.where(den == 0, 1.0, den))


def run_epoch(state: TrialState, data, batch_size: int, stop: threading.Event | None = None) -> dict:
    """Train one epoch and evaluate on val; the metrics a trial reports for that epoch.
    `stop`: see train_epoch."""
    metrics = {"epoch": state.epoch + 1}
    state.fs = int(data.meta.settings["sampling_rate"])
    if state.trial.train_crop == "random":
        whole, y, lengths = on_device(state, data, "train", whole=True)
        metrics |= train_epoch(state, whole, y, batch_size, lengths, trial_length(state.trial, data.meta.settings), stop)
    else:
        metrics |= train_epoch(state, *on_device(state, data, "train"), batch_size, stop=stop)
    # Validation batches: EVAL_BATCH on a GPU; on a CPU the training batch, which runs faster there
    # (smaller tensors stay in cache). The logits are the same either way.
    metrics |= evaluate(state, *on_device(state, data, "val"), batch_size=EVAL_BATCH if state.device.type == "cuda" else batch_size)
    return metrics


def state_dict(state: TrialState) -> dict:
    """Everything needed to continue bit-identically: weights, optimizer, epoch, every RNG.

    Tensors, numbers and tuples only, so `torch.load(..., weights_only=True)` reads it.
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    out = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "epoch": state.epoch,
        "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)),
        "python_rng": random.getstate(),
    }
    if torch.cuda.is_available():
        out["cuda_rng"] = torch.cuda.get_rng_state_all()
    if state.aug_generator is not None:
        out["aug_generator"] = state.aug_generator.get_state()
    return out


def load_state_dict(state: TrialState, saved: dict) -> None:
    """Restore a TrialState from `state_dict` output."""
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.epoch = int(saved["epoch"])
    state.generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    kind, keys, pos, has_gauss, cached_gaussian = saved["numpy_rng"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(saved["python_rng"])
    if "cuda_rng" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    if state.aug_generator is not None and "aug_generator" in saved:
        state.aug_generator.set_state(saved["aug_generator"])


def checkpoint(state: TrialState, trial: TrialConfig, data_hash: str, data_settings: dict, metrics: dict | None = None) -> dict:
    """A checkpoint that describes itself: state_dict plus the trial config, data, library versions,
    and the metrics of the epoch it ends.

    Loaded with `read_checkpoint` and checked with `check_checkpoint`, it means something
    without the Ray folder it was saved in.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "trial": asdict(trial),
        "model_package": get_model(trial.model).package,  # what a machine without it must install to load this
        "data_hash": data_hash,
        "data_settings": data_settings,
        "versions": provenance.library_versions(),
        "metrics": metrics or {},
        **state_dict(state),
    }


def read_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint without running code from it (weights_only: tensors and plain values only)."""
    return torch.load(path, weights_only=True, map_location=map_location)


def check_checkpoint(saved: dict, trial: TrialConfig, data_hash: str, where: str) -> None:
    """Refuse a checkpoint that belongs to another trial config or to other data."""
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise EcgRayError(f"{where} has checkpoint format {saved.get('format')!r}; this ecg_ray reads {CHECKPOINT_FORMAT}.")
    if TrialConfig.from_dict(saved["trial"]) != trial:
        raise EcgRayError(f"{where} was saved by trial {saved['trial']}, not {asdict(trial)}; it cannot continue this trial.")
    if saved["data_hash"] != data_hash:
        raise EcgRayError(f"{where} was trained on data {saved['data_hash']}, not {data_hash}; it cannot continue this trial.")
