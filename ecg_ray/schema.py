"""Names of classes, metrics and table columns, defined once.

    python -c "from ecg_ray.schema import EPOCH_COLUMNS; print(EPOCH_COLUMNS)"

The trial loop (ecg_ray.training.loop) produces metrics under these names, the
scheduler and the progress printer (ecg_ray.tuning.schedulers, ecg_ray.tuning.driver) read
them, and the report (ecg_ray.results.report) turns them into columns. Adding a
metric is one edit here plus the code that computes it.
"""

from __future__ import annotations

from dataclasses import fields

from ecg_ray.config import TrialConfig
from ecg_ray.labels import CLASS_KEYS, CLASS_NAMES, LABEL_NAMES, NUM_CLASSES  # noqa: F401  (the classes, by index)

# The stable name of a trial (ecg_ray.config.SearchSpace.trials): a key of Tune's config,
# and the trial_id of every table, status and progress line.
TRIAL_KEY = "trial_key"

# Trials are ranked, and ASHA stops them, on this metric.
RANK_METRIC = "val_macro_f1"
RANK_MODE = "max"

PER_CLASS = ("f1", "precision", "recall")
# What every epoch reports for a split, besides the confusion matrix (`<split>_confusion`).
SPLIT_METRICS = ("loss", "acc", "macro_f1", "challenge_f1", *(f"{m}_{k}" for m in PER_CLASS for k in CLASS_KEYS))
EPOCH_COLUMNS = ["epoch", "train_loss", "train_acc", *(f"val_{m}" for m in SPLIT_METRICS)]
CONFUSION = "val_confusion"
# One line of progress.jsonl (besides trial_id and time). pid: the trial's Tune actor (Tune writes
# it into every result); worker_pid: its Ray Train worker's process.
PROGRESS_KEYS = ("epoch", "train_loss", "val_loss", "val_macro_f1", "epoch_time_s", "node_id", "pid", "worker_pid")

# Where a trial's start-up went, reported with the first epoch a worker runs: Tune driver start to
# the worker's loop (Ray Train's controller, placement group and worker process), the worker's
# imports (torch), fetching the prepared data from the object store, and building the trial on its
# device (CUDA context, model, optimizer, a checkpoint to resume from).
STARTUP_PARTS = ("startup_train_s", "startup_import_s", "startup_data_s", "startup_build_s")
# Where a trial's seconds and memory went, reported beside the metrics (ecg_ray.tuning.trial) and read by
# benchmarks/speed.py: start-up (Tune driver start to first batch, in the first epoch a worker runs,
# less any wait for a free slot) and its parts, that wait (a trial started ahead), the previous
# epoch's checkpoint (save + report), peak resident memory and peak GPU memory of the worker.
TIMING_KEYS = ("startup_s", *STARTUP_PARTS, "startup_wait_s", "checkpoint_s", "peak_rss_mb", "peak_gpu_mb")

# A model shape's inference latency (ms, median of repeated timings; ecg_ray.results.analysis.cost) at these batch
# sizes, and the device it was timed on: they depend on the machine, not on the experiment.
LATENCY_BATCHES = (1, 256)
LATENCY_COLUMNS = [*(f"latency_b{b}_ms" for b in LATENCY_BATCHES), "latency_device"]

# A trial's config as table columns, in TrialConfig's order.
CONFIG_COLUMNS = [f.name for f in fields(TrialConfig)]
# Trial keys added after folders were written: an older folder's trials (and cost rows) had their defaults.
ADDED_CONFIG_KEYS = {"model": TrialConfig.model, "model_args": TrialConfig.model_args}
# Columns that say where and how fast a trial ran; they differ between identical runs.
RUN_COLUMNS = ["trial_id", "wall_time_s", "epoch_time_s", "node_id", "node_ids", "pid", "worker_pid", "device", "status", *TIMING_KEYS,
               *LATENCY_COLUMNS]


def confusion_columns() -> list[str]:
    """The flattened confusion-matrix columns of the history table: cm_true<i>_pred<j>."""
    return [f"cm_true{i}_pred{j}" for i in range(NUM_CLASSES) for j in range(NUM_CLASSES)]
