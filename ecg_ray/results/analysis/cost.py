"""What a config costs to run: parameters, multiply-accumulates per record, inference latency.

    python -m ecg_ray.results.analysis.cost               # the notebook's model at H 128 and 256, on this machine

Measured once per model shape (the keys that change the network or its input: a learning rate or a
dropout rate costs nothing at inference) by `ecg-ray tune` after its trials, and recorded in the
experiment folder (costs.json), so the report reads them and stays a pure function of the folder.

- `params`: trainable parameters (the notebook's 448,452 at H 128, 990,404 at H 256).
- `macs_per_record`: multiply-accumulates of one forward pass over one record at the trial's input
  length, from `torch.utils.flop_counter.FlopCounterMode` (its FLOPs / 2): the convolutions, the GRU's
  matrix products and the classifier. FlopCounterMode has no formula for the FFT, so the STFT is
  left out (at 9000 samples its 71 frames of a 256-point real FFT are roughly 0.3 M MACs beside
  the model's 19 M), as are elementwise ops (ReLU, pooling, the GRU's gates, log1p). Exact and
  the same on every machine.
- `latency_b1_ms`, `latency_b256_ms`: the median of repeated timings of a forward pass (eval mode,
  no gradient, the trial's precision) of 1 and 256 records, after a warm-up, on the device the
  trials ran on where this process has it (a CUDA device with synchronised timing; else the CPU at
  the trial worker's thread count). They depend on the machine: `latency_device` says which.
  Each batch size is timed `report.latency_repeats` times at most, and no longer than
  LATENCY_BUDGET_S once it has one timing: 256 records on one CPU thread take about a second a
  pass, where a first-call overhead of milliseconds needs no warm-up pass, so that pass is the
  timing (it was 2 + 5 passes, 7 s of the quick demo's 9 s after tuning).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict

from ecg_ray.config import TrialConfig
from ecg_ray.schema import ADDED_CONFIG_KEYS, LATENCY_BATCHES, LATENCY_COLUMNS

# The trial keys that change the network, its input or how it runs at inference.
SHAPE_KEYS = ("model", "model_args", "hidden_size", "gru_layers", "bidirectional", "conv_channels", "n_fft", "hop_length", "normalize",
              "target_length", "precision", "channels_last")
def recorded_shape(row: dict) -> dict:
    """The shape keys of a costs.json row (a row written before models had names measured crnn)."""
    return {k: row.get(k, ADDED_CONFIG_KEYS.get(k)) for k in SHAPE_KEYS}


WARMUP = 2
LATENCY_BUDGET_S = 0.5  # per batch size: timing stops once this much was spent on timed passes
COST_COLUMNS = ["params", "macs_per_record", *LATENCY_COLUMNS]


def shape_of(trial: TrialConfig, data_length: int) -> dict:
    """The shape keys of a trial, its target_length resolved to samples (0 is the data's length)."""
    values = asdict(trial)
    return {k: values[k] for k in SHAPE_KEYS} | {"target_length": trial.target_length or int(data_length)}


def warm_up() -> None:
    """Pay FlopCounterMode's one-time start (about 1.6 s of a CPU: torch's dispatch machinery loads
    on first use) now: the driver does it while the last trials train (ecg_ray.tuning.progress)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):
        torch.zeros(2, 2) @ torch.zeros(2, 2)


def model_cost(shape: dict) -> dict:
    """{"params", "macs_per_record"} of the model a shape describes (see the module docstring)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = _model(shape)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, shape["target_length"]))
    return {"params": sum(p.numel() for p in model.parameters() if p.requires_grad), "macs_per_record": counter.get_total_flops() // 2}


def latency(shape: dict, device: str = "cpu", repeats: int = 5, batches=LATENCY_BATCHES,
            budget_s: float = LATENCY_BUDGET_S) -> dict:
    """{"latency_b<N>_ms"}: median milliseconds of up to `repeats` forward passes of N records on
    `device`, after up to WARMUP warm-up passes; a pass slower than `budget_s` is itself a timing
    (no warm-up matters at that scale), and timing stops once the timed passes took `budget_s`."""
    import torch

    from ecg_ray.training.loop import autocast

    dev = torch.device(device)
    model = _model(shape).to(dev)
    trial = TrialConfig(precision=shape["precision"])
    out = {}
    for batch in batches:
        x = torch.zeros(batch, shape["target_length"], device=dev)
        timings: list[float] = []
        warm = 0
        with torch.no_grad(), autocast(dev, trial):
            while len(timings) < repeats:
                _sync(dev)
                t0 = time.perf_counter()
                model(x)
                _sync(dev)
                took = time.perf_counter() - t0
                if warm < WARMUP and took < budget_s:
                    warm += 1
                    continue
                timings.append(took * 1000.0)
                if sum(timings) >= budget_s * 1000.0:
                    break
        out[f"latency_b{batch}_ms"] = statistics.median(timings)
    return out


def _sync(dev) -> None:
    if dev.type == "cuda":
        import torch

        torch.cuda.synchronize(dev)


def _model(shape: dict):
    from ecg_ray.models import build_model

    trial = TrialConfig(**{k: v for k, v in shape.items() if k != "target_length"})
    return build_model(trial).eval()


def measure(trials: list[TrialConfig], data_length: int, device: str, threads: int, repeats: int) -> list[dict]:
    """One row per distinct shape among `trials`: its shape keys and COST_COLUMNS (latency left out,
    None, when `repeats` is 0). Runs with `threads` torch threads, as a trial worker does, and
    restores the caller's count."""
    import torch

    shapes = []
    for trial in trials:
        shape = shape_of(trial, data_length)
        if shape not in shapes:
            shapes.append(shape)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        rows = []
        for shape in shapes:
            row = shape | model_cost(shape)
            if repeats > 0:
                row |= latency(shape, device, repeats) | {"latency_device": _device_name(device, threads)}
            else:
                row |= {f"latency_b{b}_ms": None for b in LATENCY_BATCHES} | {"latency_device": None}
            rows.append(row)
        return rows
    finally:
        torch.set_num_threads(before)


def _device_name(device: str, threads: int) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    cpu = platform.processor() or platform.machine()
    return f"cpu: {cpu}, {threads} thread(s)"


if __name__ == "__main__":
    for h in (128, 256):
        s = shape_of(TrialConfig(hidden_size=h), 9000)
        print(f"H={h}:", model_cost(s) | latency(s, "cuda" if __import__("torch").cuda.is_available() else "cpu"))
