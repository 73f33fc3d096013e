"""The per-trial loop inside a Ray Train worker: read data, train, report, checkpoint.

    ecg-ray tune experiments/quick.yaml     # runs this once per grid point

The worker reads the prepared arrays from Ray's object store (put there once
per experiment by ecg_ray.tune), builds the trial from its seed, resumes from
the latest checkpoint when Ray Train restarts it, and reports metrics plus a
checkpoint after every epoch.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch

from ecg_ray.config import TrialConfig
from ecg_ray.train import build_trial, load_state_dict, run_epoch, state_dict

CHECKPOINT_FILE = "trial_state.pt"


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point. `config`: trial (TrialConfig fields), data_ref ([ObjectRef]), threads, data_hash."""
    trial = TrialConfig.from_dict(config["trial"])  # checked again here, where it is used
    # A fixed thread count: CPU float reductions depend on it, so it is part of the determinism.
    torch.set_num_threads(int(config["threads"]))
    data = ray.get(config["data_ref"][0])
    if data.data_hash != config["data_hash"]:
        raise RuntimeError(f"data in the object store has hash {data.data_hash}, the experiment expects {config['data_hash']}")
    device = ray.train.torch.get_device()
    state = build_trial(trial, data.weights, device)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            load_state_dict(state, torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, weights_only=False, map_location=device))
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
            torch.save(state_dict(state), Path(ckpt_dir) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir))
