"""The per-trial loop inside a Ray Train worker: read data, train, report, checkpoint.

    ecg-ray tune experiments/quick.yaml     # runs this once per grid point

The worker receives a WorkerSpec (ecg_ray.config), reads the prepared arrays
from Ray's object store (put there once per experiment by ecg_ray.tune), builds
the trial from its seed, resumes from the latest checkpoint when Ray Train
restarts it, and reports metrics plus a self-describing checkpoint after every epoch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
import time
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch

from ecg_ray.config import TrialConfig, WorkerSpec
from ecg_ray.expdir import CHECKPOINT_FILE
from ecg_ray.train import build_trial, check_checkpoint, checkpoint, load_state_dict, read_checkpoint, run_epoch

SPEC_KEY = "spec"  # the one key of train_loop_config: a WorkerSpec


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point. `config`: {"spec": WorkerSpec}."""
    spec: WorkerSpec = config[SPEC_KEY]
    trial = TrialConfig.from_dict(asdict(spec.trial))  # checked again here, where it is used
    # A fixed thread count: CPU float reductions depend on it, so it is part of the determinism.
    torch.set_num_threads(spec.threads)
    data = ray.get(spec.data_ref)
    if data.data_hash != spec.data_hash:
        raise RuntimeError(f"data in the object store has hash {data.data_hash}, the experiment expects {spec.data_hash}")
    device = ray.train.torch.get_device()  # the GPU Ray assigned (CUDA_VISIBLE_DEVICES), else the CPU
    if device.type == "cuda":
        torch.cuda.set_device(device)
    state = build_trial(trial, data.weights, device)
    saved_checkpoint = ray.train.get_checkpoint()
    if saved_checkpoint:
        with saved_checkpoint.as_directory() as ckpt_dir:
            path = Path(ckpt_dir) / CHECKPOINT_FILE
            saved = read_checkpoint(path, map_location=device)
            check_checkpoint(saved, trial, data.data_hash, str(path))
            load_state_dict(state, saved)
        if state.epoch >= trial.epochs:
            # Killed after its last checkpoint but before Tune saw it end: nothing is left to
            # train, and Tune needs the trial's final result once more to end it.
            ray.train.report(saved["metrics"])
            return
    node_id = ray.get_runtime_context().get_node_id()
    while state.epoch < trial.epochs:
        start = time.perf_counter()
        metrics = run_epoch(state, data, trial.batch_size)
        metrics |= {
            "epoch_time_s": time.perf_counter() - start,
            "data_hash": data.data_hash,
            "node_id": node_id,
            "device": str(device),
            "pid": os.getpid(),
        }
        with tempfile.TemporaryDirectory() as ckpt_dir:
            torch.save(checkpoint(state, trial, data.data_hash, data.meta.settings, metrics), Path(ckpt_dir) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir))
