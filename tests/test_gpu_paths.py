"""The GPU code paths, exercised as far as a CPU-only machine allows."""

import dataclasses
import os

from pathlib import Path

import pytest
import torch

from ecg_ray.config import experiment_from_dict
from ecg_ray.training.loop import CUBLAS_WORKSPACE, build_trial, seed_everything
from ecg_ray.config import TrialConfig
from ecg_ray.tuning.driver import tune_search
from ecg_ray.tuning.resources import _worker_resources


@pytest.mark.parametrize(
    "resources, use_gpu, gpus, expected",
    [
        ({}, False, 0.0, {"CPU": 1}),
        ({}, True, 1.0, {"CPU": 1, "GPU": 1.0}),
        ({}, True, 0.125, {"CPU": 1, "GPU": 0.125}),  # eight trials share a GPU
        ({"cpus_per_worker": 4, "custom_resources_per_worker": {"a10g": 1}}, False, 0.0, {"CPU": 4, "a10g": 1}),
    ],
)
def test_worker_resources(resources, use_gpu, gpus, expected):
    cfg = experiment_from_dict({"resources": resources})
    assert _worker_resources(cfg, use_gpu, gpus) == expected


@pytest.mark.parametrize(
    "gpu_gib, expected_trials, expected_share",
    [
        (141, 8, 0.125),  # H200: capped at 8 (throughput flattens; each trial also needs a CPU)
        (80, 8, 0.125),  # H100 / A100 80 GB
        (24, 8, 0.125),  # A10G, L4
        (16, 8, 0.125),  # T4, V100 16 GB, and the default when the GPU type is unknown
        (8, 4, 0.25),
        (6, 3, 0.3333),  # 1/3 rounded down to Ray's 4 decimals: 3 x 0.3333 fits in one GPU
        (2, 1, 1.0),  # less than two trials' memory: one trial per GPU
    ],
)
def test_auto_packing_picks_the_documented_counts(gpu_gib, expected_trials, expected_share):
    from ecg_ray.tuning.packing import gpu_fraction, trial_memory_gib, trials_per_gpu

    # The notebook's data size (8528 records: 6822 train, 1706 val at 9000 samples), H=256.
    per_trial = trial_memory_gib(6822 * 9000 * 4 + 6822 * 8, 1706 * 9000 * 4 + 1706 * 8, TrialConfig(hidden_size=256))
    assert 1.0 < per_trial < 2.0
    n = trials_per_gpu(gpu_gib, per_trial)
    assert (n, gpu_fraction(n)) == (expected_trials, expected_share)
    assert n * gpu_fraction(n) <= 1.0


def test_auto_packing_reads_the_gpu_type_from_ray_resources():
    from ecg_ray.tuning.packing import DEFAULT_GPU_GIB, gpu_memory_gib

    assert gpu_memory_gib({"CPU": 16, "GPU": 1, "accelerator_type:A10G": 1})[0] == 24
    assert gpu_memory_gib({"accelerator_type:H100": 1, "accelerator_type:T4": 1})[0] == 16  # the smallest GPU decides
    assert gpu_memory_gib({"GPU": 1})[0] == DEFAULT_GPU_GIB


def test_sizing_the_gpu_leaves_torch_and_cuda_out_of_the_driver():
    """The GPU's size comes from the NVIDIA driver (NVML), so the `ecg-ray tune` process never
    holds a CUDA context on the GPU its trials share; here, without a GPU, NVML has no answer."""
    import subprocess
    import sys

    code = ("import sys\nfrom ecg_ray.tuning.packing import gpu_memory_gib, local_gpu_memory_gib\n"
            "print(gpu_memory_gib({'accelerator_type:A10G': 1})[0], 'torch' in sys.modules, local_gpu_memory_gib() is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["24.0", "False"]
    if not Path("/dev/nvidiactl").exists():
        assert out[2] == "True"


def test_deterministic_settings_for_cuda(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(3)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_trial_builds_on_the_given_device():
    state = build_trial(TrialConfig(hidden_size=8), [1.0, 1.0, 1.0, 1.0], device="cpu")
    assert next(state.model.parameters()).device.type == "cpu"
    assert state.criterion.weight.device.type == "cpu"
    assert state.generator.device.type == "cpu"  # shuffling stays on the CPU generator on GPU too


# Every key beyond the notebook's seven, at its default.
KNOBS = {f.name: f.default for f in dataclasses.fields(TrialConfig)
         if f.name not in ("lr", "hidden_size", "dropout", "optimizer", "batch_size", "epochs", "seed")}


def test_tune_gets_one_point_per_grid_point_under_its_trial_key():
    cfg = experiment_from_dict({"search": {"lr": [1e-3, 5e-4], "hidden_size": [128], "optimizer": "sgd"}})
    space, search = tune_search(cfg.trials(), max_concurrent=3)
    assert search._points_to_evaluate == [
        {"trial_key": "t0000", "lr": 1e-3, "hidden_size": 128, "dropout": 0.2, "optimizer": "sgd", "batch_size": 32, "epochs": 6,
         **KNOBS, "seed": 42},
        {"trial_key": "t0001", "lr": 5e-4, "hidden_size": 128, "dropout": 0.2, "optimizer": "sgd", "batch_size": 32, "epochs": 6,
         **KNOBS, "seed": 42},
    ]
    assert sorted(space["lr"].categories) == [5e-4, 1e-3] and space["seed"].categories == [42]
    assert search.max_concurrent == 3


def test_gpu_loss_formula_equals_weighted_cross_entropy():
    """The CUDA branch of the loss (NLLLoss has no deterministic CUDA kernel), checked on CPU."""
    from ecg_ray.training.loop import deterministic_weighted_ce

    torch.manual_seed(0)
    weight = torch.tensor([0.5310278, 0.70645161, 0.56395736, 1.0])
    logits = torch.randn(33, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (33,))
    ours = deterministic_weighted_ce(logits, target, weight.double())
    ref = torch.nn.functional.cross_entropy(logits, target, weight=weight.double())
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref)
