"""What a trial's Ray Train worker runs: read the prepared data, build the trial from its seed,
resume from the latest checkpoint, and report metrics plus a self-describing checkpoint after
every epoch (ecg_ray.training.loop does the training itself; this module is its Ray side).

The same function runs on both paths (ecg_ray.tuning.fast_path), so both give the same metrics bit
for bit: only who starts the worker and carries its reports to Tune differs. Imported by every
trial's worker as it unpickles train_loop_per_worker, so torch and ecg_ray.training are imported
inside it, where the worker needs them, not at the top.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import ray
import ray.train

from ecg_ray.config import CUBLAS_WORKSPACE, TrialConfig, WorkerSpec
from ecg_ray.results.store.folder import CHECKPOINT_FILE
from ecg_ray.schema import STARTUP_PARTS
from ecg_ray.tuning import fast_path
from ecg_ray.tuning.worker_state import REUSABLE, STOP  # shared with the fast path: a leaf module

SPEC_KEY = "spec"  # the one key of train_loop_config: a WorkerSpec


def train_loop_per_worker(config: dict) -> dict:
    """Ray Train entry point. `config`: {"spec": WorkerSpec}.

    Returns {REUSABLE: whether this process may run another trial} (ecg_ray.tuning.fast_path): not after
    `compile: true`, whose compiled-code caches would carry over into the next trial.
    """
    marks = [time.time()]  # the start-up's parts (schema.STARTUP_PARTS)
    # Ray Train logs every report's whole metrics dict at INFO to the root logger of the worker,
    # which it sends to the console: one line per epoch is ecg-ray's (its log files keep them all).
    logging.getLogger().setLevel(logging.WARNING)
    # Before CUDA starts in this process (RunConfig.worker_runtime_env sets it too, where Ray has it).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    import ray.train.torch
    import torch

    from ecg_ray.data.prepare import fold_view
    from ecg_ray.training.loop import TrialStopped, build_trial, check_checkpoint, checkpoint, load_state_dict, read_checkpoint, run_epoch

    marks.append(time.time())
    spec: WorkerSpec = config[SPEC_KEY]
    trial = TrialConfig.from_dict(asdict(spec.trial))  # checked again here, where it is used
    # A fixed thread count: CPU float reductions depend on it, so it is part of the determinism.
    torch.set_num_threads(spec.threads)
    data = ray.get(spec.data_ref)
    marks.append(time.time())
    if data.data_hash != spec.data_hash:
        raise RuntimeError(f"data in the object store has hash {data.data_hash}, the experiment expects {spec.data_hash}")
    data = fold_view(data, trial.fold)  # a cross-validation trial's train and val (the single split: data itself)
    device = ray.train.torch.get_device()  # the GPU Ray assigned (CUDA_VISIBLE_DEVICES), else the CPU
    if device.type == "cuda":
        torch.cuda.set_device(device)
    reset_peak_memory(device)  # this trial's peaks, in a process that may have run others before
    STOP.clear()  # a stop asked of this process's last trial (the fast path's request_stop) is not this one's
    done = {REUSABLE: not trial.compile}
    state = build_trial(trial, data.weights, device)
    saved_checkpoint = ray.train.get_checkpoint()
    saved = None
    if saved_checkpoint:
        with saved_checkpoint.as_directory() as ckpt_dir:
            path = Path(ckpt_dir) / CHECKPOINT_FILE
            try:
                saved = read_checkpoint(path, map_location=device)
            except Exception as err:  # truncated by a full disk, or not tensors only: never fatal, never run
                why = (str(err).strip().splitlines() or [""])[0][:160]
                print(f"[ecg-ray] the checkpoint {saved_checkpoint.path} cannot be read safely "
                      f"({type(err).__name__}: {why}); this trial starts again from epoch 1 (the same numbers: "
                      "training is deterministic)", flush=True)
            if saved is not None:
                check_checkpoint(saved, trial, data.data_hash, str(path))
                load_state_dict(state, saved)
    if saved is not None:
        # The restored epoch's metrics once more: the run that saved this checkpoint may have been
        # stopped before Tune wrote that epoch down (a driver stopped or killed between the two),
        # and the history keeps an epoch's last report. After the last epoch it also ends the trial.
        ray.train.report(saved["metrics"])
        if state.epoch >= trial.epochs:
            return done
    node_id = ray.get_runtime_context().get_node_id()
    timing = {}
    if spec.driver_started:
        # A trial started ahead (ecg_ray.tuning.driver.trials_ahead) first waits for a free slot: that wait
        # is reported on its own, and start-up is the time spent starting.
        wait = slot_wait_s()
        marks = [spec.driver_started + wait, *marks, time.time()]
        timing = {"startup_s": marks[-1] - marks[0], **{k: b - a for k, a, b in zip(STARTUP_PARTS, marks, marks[1:])},
                  "startup_wait_s": wait}
    while state.epoch < trial.epochs:
        start = time.perf_counter()
        try:
            metrics = run_epoch(state, data, trial.batch_size, stop=STOP)
        except TrialStopped:  # Tune stopped the trial: nothing more to report
            return done
        metrics |= {
            "epoch_time_s": time.perf_counter() - start,
            "data_hash": data.data_hash,
            "node_id": node_id,
            "device": str(device),
            "worker_pid": os.getpid(),
            **timing,
            **peak_memory(device),
        }
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as ckpt_dir:
            torch.save(checkpoint(state, trial, data.data_hash, data.meta.settings, metrics), Path(ckpt_dir) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir))
        timing = {"checkpoint_s": time.perf_counter() - start}  # reported with the next epoch
    return done


def slot_wait_s() -> float:
    """Seconds this worker's placement group waited to be placed (for a free slot), from Ray's
    placement-group stats on a tested Ray (ecg_ray.tuning._ray_internals); 0.0 where Ray does not say."""
    return fast_path.placement_group_wait_s()


def reset_peak_memory(device) -> None:
    """Start this process's peak resident memory and, on a GPU, its peak GPU memory afresh, so that
    peak_memory reports this trial's in a worker that ran others before (ecg_ray.tuning.fast_path).

    First the heap memory earlier trials freed goes back to the system: each trial runs in a thread
    of its own, and what it freed stays resident in that thread's malloc arena (glibc) otherwise,
    about 70 MB more after every trial of the seed grid. Then Linux's peak (VmHWM, which getrusage
    reports) restarts from the memory in use now."""
    import torch

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: the peak then spans the process's earlier trials
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> dict:
    """Peak resident memory of this worker process (and peak GPU memory on a GPU), in MiB."""
    import resource

    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
