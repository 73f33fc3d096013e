"""How many trials share one GPU (`resources.gpus_per_worker: auto`).

    python -c "from ecg_ray.tuning.packing import trials_per_gpu; print(trials_per_gpu(80, 1.2))"

One trial of the notebook's model (crnn) is small: 0.45-1.0 M parameters, batches of 32 records. What it
holds on a GPU (`trial_memory_gib`) is the CUDA context with cuDNN's workspace, the
training and validation arrays (resident for the whole trial, ecg_ray.training.loop.on_device),
weights, gradients and Adam's two moments, and the activations of one training batch
and one validation batch. `trials_per_gpu` fits as many as the GPU's memory holds with
a margin, at most MAX_TRIALS_PER_GPU: on an H200, 12 processes sharing the GPU ran 3.5x
the epochs per second of one, so throughput flattens long before memory runs out, and
every trial also needs a CPU. The GPU's memory comes from the NVIDIA driver where this
process sees a GPU, else from Ray's `accelerator_type:*` resource of the cluster's GPU nodes, else
DEFAULT_GPU_GIB. Set `resources.gpus_per_worker` to a number to choose yourself.
"""

from __future__ import annotations

import math

from ecg_ray.models import memory

MAX_TRIALS_PER_GPU = 8
USABLE_SHARE = 0.85  # of the GPU's memory: headroom for fragmentation and other processes
CONTEXT_GIB = 0.6  # CUDA context, cuDNN and cuBLAS workspaces of one process (measured: 0.4-0.6 GiB)
DEFAULT_GPU_GIB = 16.0  # the smallest common data-centre GPU (T4, V100 16 GB): safe when the size is unknown

# GiB of memory by Ray's accelerator type (ray.util.accelerators); the larger variant where a type has two.
ACCELERATOR_GIB = {
    "T4": 16, "V100": 16, "P100": 16, "A10G": 24, "L4": 24, "L40S": 48, "A100": 40, "A100-40G": 40,
    "A100-80G": 80, "H100": 80, "H200": 141, "B200": 180,
}


def trial_memory_gib(train_bytes: int, val_bytes: int, trial, eval_batch: int = 256, target_length: int = 9000) -> float:
    """Estimated GPU memory of one trial (a TrialConfig) on records of `target_length` samples, in GiB (see
    the module docstring for what it counts): its model's parameters and activations per record are the
    model's own estimate (ecg_ray.models)."""
    params, per_record = memory(trial, target_length)
    train_activations = 3 * trial.batch_size * per_record  # forward, saved tensors, gradients
    eval_activations = eval_batch * per_record
    weights = 4 * params * 4  # weights, gradients, Adam's two moments
    return CONTEXT_GIB + (train_bytes + val_bytes + weights + train_activations + eval_activations) / 2**30


def trials_per_gpu(gpu_gib: float, per_trial_gib: float, cap: int = MAX_TRIALS_PER_GPU) -> int:
    """How many trials fit on one GPU of `gpu_gib`, at least 1 and at most `cap`."""
    return max(1, min(cap, int(gpu_gib * USABLE_SHARE // per_trial_gib)))


def gpu_fraction(n: int) -> float:
    """The gpus_per_worker that packs n trials: 1/n rounded *down* to Ray's 4 decimal places
    (1/7 = 0.142857 would round to 0.1429, and 7 x 0.1429 > 1 leaves room for only 6)."""
    return math.floor(10_000 / n) / 10_000


def gpu_memory_gib(cluster_resources: dict) -> tuple[float, str]:
    """(GPU memory in GiB, where the number came from)."""
    local = local_gpu_memory_gib()
    if local:
        return local
    types = sorted(k.split(":", 1)[1] for k in cluster_resources if k.startswith("accelerator_type:"))
    known = [ACCELERATOR_GIB[t] for t in types if t in ACCELERATOR_GIB]
    if known:
        return float(min(known)), f"Ray accelerator type {', '.join(types)}"
    return DEFAULT_GPU_GIB, "unknown GPU type: assumed the smallest common size"


def local_gpu_memory_gib() -> tuple[float, str] | None:
    """This machine's first GPU from the NVIDIA driver (`nvidia-smi`), or None. Not from torch: the
    driver process would import it with CUDA and hold a CUDA context on the GPU (half a GiB the
    trials could use) for the whole run, for one number."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):  # no NVIDIA driver here: Ray's view is next
        return None
    name, _, mib = out.stdout.strip().rpartition(",")
    if out.returncode != 0 or not mib.strip().isdigit():
        return None
    return int(mib) / 1024, f"nvidia-smi: {name.strip()}"
