"""The sections of an experiment file as frozen dataclasses: data, one trial's knobs, the
scheduler and the resources. Each field declares its constraint (ecg_ray.config.constraints)."""

from __future__ import annotations

import os

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ecg_ray.config.constraints import (
    AUGMENTATIONS, CLASS_BALANCE, DIFFICULTIES, LR_SCHEDULES, NORMALIZE, OPTIMIZER_NAMES, OPTIONAL_STR, PRECISIONS,
    SCHEDULER_NAMES, SOURCE_RULES, TRAIN_CROPS, FAST_PATH, Interval, Options, Rule, Validated, fail, validate,
)
from ecg_ray.errors import ConfigError
from ecg_ray.config.models import KnownModel, ModelArgs, canonical_args


@dataclass(frozen=True)
class DataConfig(Validated):
    """Where the records come from and how they are prepared (see ecg_ray.data.sources)."""

    source: str = "synthetic"  # the built-in generator; cinc2017 (a training2017/ folder), pickle, parquet
    path: str | None = None  # file or folder; the train file for a pickle/Parquet pair
    val_path: str | None = None  # the val file of a pickle/Parquet pair
    test_path: str | None = None  # a given held-out test set: challenge folder, .mat/.hea record, .parquet or .pkl
    n_records: int = 8528  # synthetic only
    # synthetic only: realistic (as hard as CinC 2017, 8% label noise) or easy (the first generator)
    difficulty: str = "realistic"
    target_length: int = 9000  # samples per record: zeros padded at the end or the centre kept (the notebook)
    sampling_rate: int = 300  # Hz every record must have (AliveCor: 300)
    min_length: int = 2700  # shorter records are bad records (9 s at 300 Hz; CinC 2017 starts at 2,714)
    # Longer records are bad records (200 s at 300 Hz; CinC 2017 ends at 18,286): a whole record is
    # kept in memory for train_crop: random, so one stray 10-million-sample file would take gigabytes.
    max_length: int = 60000
    # The val split's share of all records, as test_fraction is the test split's (train gets the rest: 1 -
    # val_fraction - test_fraction); both stratified by class and seeded. 8528 records at 0.2 and 0.275: val 1706.
    val_fraction: float = 0.2
    # 0: one train/val split (val_fraction). K >= 2: stratified K-fold cross-validation of the records
    # left after the test split (with a given val file: train and val together), drawn once from the
    # experiment's seed; each config and seed then runs K trials, fold k validating on the k-th part.
    folds: int = 0
    test_fraction: float = 0.0  # a held-out test split's share of all records, never used to select a config (0: none)
    on_bad_record: str = "error"  # error: stop before any trial, naming the record; skip: drop and list each
    cache_dir: str | None = None  # default: $ECG_RAY_CACHE or ~/.cache/ecg_ray
    # Records outside these amplitude limits (ADC units, 1000 per mV) are bad records:
    min_peak_to_peak: float = 50.0  # below 0.05 mV from lowest to highest: a dead lead, or a signal in mV
    max_abs_amplitude: float = 25000.0  # beyond 25 mV: not an ECG (real CinC records stay within 11 mV)
    # A pickle runs code stored in it when loaded: only your own files. On the command line:
    # --trust-pickle FILE, naming each; an experiment folder's copy of this setting never counts.
    trust_pickle: bool = False

    PREFIX: ClassVar[str] = "data."
    CONSTRAINTS: ClassVar[dict] = {
        "source": Options(tuple(sorted(SOURCE_RULES))),
        "path": OPTIONAL_STR,
        "val_path": OPTIONAL_STR,
        "test_path": OPTIONAL_STR,
        "cache_dir": OPTIONAL_STR,
        "n_records": Interval(int, 8, 1_000_000),
        "difficulty": Options(DIFFICULTIES),
        "target_length": Interval(int, 256, 1_000_000),
        "sampling_rate": Interval(int, 1, 100_000),
        "min_length": Interval(int, 1, 1_000_000),
        "max_length": Interval(int, 1, 100_000_000),
        "val_fraction": Interval(float, 0.0, 1.0, "neither"),
        "folds": Rule("0 (a single train/val split) or a number of folds from 2 to 100",
                      lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == 0 or 2 <= v <= 100), invalid=1),
        "test_fraction": Interval(float, 0.0, 1.0, "left"),
        "on_bad_record": Options(("error", "skip")),
        "min_peak_to_peak": Interval(float, 0.0, 1e9),
        "max_abs_amplitude": Interval(float, 0.0, 1e9, "right"),
        "trust_pickle": Options((True, False)),
    }

    @property
    def has_test(self) -> bool:
        """A held-out test split: given (test_path) or split off (test_fraction)."""
        return bool(self.test_path) or self.test_fraction > 0

    def check_together(self) -> None:
        pickles = [p for p in (self.path, self.val_path) if p and self.source == "pickle"]
        pickles += [self.test_path] if self.test_path and str(self.test_path).endswith((".pkl", ".pickle")) else []
        if pickles and self.trust_pickle is not True:
            files = pickles
            what = f"The data file {files[0]} is a pickle" if len(files) == 1 else f"The data files {' and '.join(files)} are pickles"
            raise ConfigError(
                f"{what}: loading a pickle runs code stored in it. If you made it yourself, pass "
                + " ".join(f"--trust-pickle {p}" for p in files)
                + " (or set `trust_pickle: true` under `data:` of your experiment file); better, convert it once with "
                "`ecg-ray data convert FILE.pkl FILE.parquet --trust-pickle FILE.pkl` and use the Parquet file."
            )
        if self.test_path and self.test_fraction > 0:
            raise ConfigError(
                f"Both data.test_path ({self.test_path!r}) and data.test_fraction ({self.test_fraction}) ask for a test "
                "split. Use one: a given test set (test_path, --test-data) or one split off the data (test_fraction)."
            )
        if self.max_length < self.min_length:
            raise ConfigError(f"data.max_length ({self.max_length}) is below data.min_length ({self.min_length}): no record "
                              "could pass. Raise data.max_length or lower data.min_length.")
        if self.val_fraction + self.test_fraction >= 1.0:
            fail("data.val_fraction + data.test_fraction", "below 1", self.val_fraction + self.test_fraction)
        rule = SOURCE_RULES[self.source]
        if rule.needs_path and not self.path:
            raise ConfigError(f"The 'data.path' parameter is required for data.source '{self.source}'. Got None instead.")
        if self.val_path and not rule.pairable:
            pairable = " and ".join(sorted(n for n, r in SOURCE_RULES.items() if r.pairable))
            raise ConfigError(
                f"The 'data.val_path' parameter is only allowed for {pairable} sources. Got {self.val_path!r} for '{self.source}'."
            )


@dataclass(frozen=True)
class TrialConfig(Validated):
    """One grid point: everything a trial needs besides the data. Checked again inside the trial."""

    lr: float = 1e-3  # the optimizer's learning rate
    hidden_size: int = 128  # the GRU's hidden units, H (448,452 parameters at 128, 990,404 at 256)
    dropout: float = 0.2  # on the GRU's last hidden state, before the classifier
    optimizer: str = "adam"  # adam, or sgd with momentum 0.9
    batch_size: int = 32  # records per optimizer step
    epochs: int = 6  # the most a trial trains (ASHA may stop it sooner)
    # Training knobs beyond the notebook; each default is the notebook's behaviour.
    weight_decay: float = 0.0  # L2 penalty of the optimizer
    lr_schedule: str = "constant"  # the learning rate by epoch (ecg_ray.training.loop.lr_factor)
    warmup_epochs: int = 0  # epochs of linear warm-up before the schedule
    grad_clip: float = 0.0  # clip the gradient's global norm to this; 0: no clipping
    label_smoothing: float = 0.0  # of the training loss (the validation loss is never smoothed)
    # weighted_loss: the notebook's class-weighted loss; sampler: classes drawn equally often, plain
    # loss; none: neither.
    class_balance: str = "weighted_loss"
    normalize: str = "none"  # zscore: each record scaled to mean 0, sd 1 inside the model (train, val, predict)
    # The records' length in samples (0: data.target_length, the notebook's 9000), and how training
    # windows are cut from longer records: centre (the notebook), or random: a fresh window each epoch.
    # Validation, test and predict always cut the centre window.
    target_length: int = 0
    train_crop: str = "centre"
    # The model's shape (ecg_ray.training.model); each default is the notebook's.
    gru_layers: int = 1
    bidirectional: bool = False
    conv_channels: int = 16  # of the first conv block; the second has twice as many
    n_fft: int = 256
    hop_length: int = 128
    # The model a trial trains (ecg_ray.models), by registered name: crnn, the notebook's STFT-CNN-GRU (it reads
    # the keys above), or an installed plug-in's (`ecg-ray models` lists them); a list compares architectures.
    model: str = "crnn"
    # The model's own hyperparameters, a mapping such as {width: 32}; each one left out takes its default, and
    # the tables show them all, as JSON. crnn has none beyond the keys it reads.
    model_args: str = "{}"
    # Augmentation of training batches (ecg_ray.training.augment): a probability per record and a strength
    # each; 0 (the default): off.
    aug_scale_p: float = 0.0
    aug_scale: float = 0.0  # amplitude x U(1 - s, 1 + s)
    aug_noise_p: float = 0.0
    aug_noise: float = 0.0  # Gaussian noise of s x the record's sd
    aug_stretch_p: float = 0.0
    aug_stretch: float = 0.0  # resampled at a rate U(1 - s, 1 + s): heart rate
    aug_burst_p: float = 0.0
    aug_burst: float = 0.0  # s x the length zeroed in one burst
    aug_wander_p: float = 0.0
    aug_wander: float = 0.0  # baseline wander of s x sd, 0.05-0.5 Hz
    # Speed options that change the numbers (off by default, so results stay the notebook's):
    # bf16: the model's forward under bfloat16 autocast (fp32 loss); compile: torch.compile'd forward;
    # channels_last: the conv blocks in channels-last memory layout (oneDNN/cuDNN sum in another order).
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    seed: int = 42
    # The cross-validation fold this trial validates on (set by data.folds, never by hand); null: the single split.
    fold: int | None = None

    CONSTRAINTS: ClassVar[dict] = {
        "model": KnownModel(),  # first: a grid over models runs each model's trials together
        "model_args": ModelArgs(),
        "lr": Interval(float, 0.0, 1.0, "right"),
        "hidden_size": Interval(int, 1, 8192),
        "dropout": Interval(float, 0.0, 1.0, "left"),
        "optimizer": Options(OPTIMIZER_NAMES),
        "batch_size": Interval(int, 1, 65536),
        "epochs": Interval(int, 1, 10_000),
        "weight_decay": Interval(float, 0.0, 1.0),
        "lr_schedule": Options(LR_SCHEDULES),
        "warmup_epochs": Interval(int, 0, 10_000),
        "grad_clip": Interval(float, 0.0, 1e6),
        "label_smoothing": Interval(float, 0.0, 1.0, "left"),
        "class_balance": Options(CLASS_BALANCE),
        "normalize": Options(NORMALIZE),
        "target_length": Interval(int, 0, 1_000_000),
        "train_crop": Options(TRAIN_CROPS),
        "gru_layers": Interval(int, 1, 8),
        "bidirectional": Options((False, True)),
        "conv_channels": Interval(int, 1, 512),
        "n_fft": Interval(int, 16, 4096),
        "hop_length": Interval(int, 1, 4096),
        **{f"aug_{name}_p": Interval(float, 0.0, 1.0) for name in AUGMENTATIONS},
        "aug_scale": Interval(float, 0.0, 1.0, "left"),
        "aug_noise": Interval(float, 0.0, 10.0),
        "aug_stretch": Interval(float, 0.0, 0.5),
        "aug_burst": Interval(float, 0.0, 0.5),
        "aug_wander": Interval(float, 0.0, 10.0),
        "precision": Options(PRECISIONS),
        "compile": Options((False, True)),
        "channels_last": Options((False, True)),
        "seed": Interval(int, 0, 2**32 - 1),
        "fold": Rule("null or a fold index from 0 (set by data.folds)",
                     lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 100), invalid=-1),
    }

    def __post_init__(self):
        # model_args are checked against the model, defaults filled, and kept as canonical JSON (hashable, one
        # table cell, one form in every file): {"width": 32} and '{"width":32}' are the same trial.
        validate("model", self.model, KnownModel())
        validate("model_args", self.model_args, ModelArgs())
        object.__setattr__(self, "model_args", canonical_args(self.model, self.model_args))
        super().__post_init__()

    def check_together(self) -> None:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            fail("warmup_epochs", f"below epochs ({self.epochs})", self.warmup_epochs)
        if 0 < self.target_length < self.n_fft:
            fail("target_length", f"0 (the data's length) or at least n_fft ({self.n_fft})", self.target_length)
        if self.hop_length > self.n_fft:
            fail("hop_length", f"at most n_fft ({self.n_fft}): a longer hop would skip samples", self.hop_length)

    @classmethod
    def from_dict(cls, values: dict) -> "TrialConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            fail("trial config", "made of the keys " + ", ".join(sorted(known)), unknown)
        return cls(**values)


# Every trial key can be searched; `seed` last, so that the seeds of one config are neighbours.
SEARCH_KEYS = tuple(TrialConfig.CONSTRAINTS)
CONFIGS_KEY = "configs"  # search.configs: an explicit list of configs instead of (or times) a grid


@dataclass(frozen=True)
class SchedulerConfig(Validated):
    """Early stopping. 'asha' stops weak trials on val macro-F1; 'none' runs every epoch of every trial."""

    name: str = "asha"  # asha: Ray Tune's ASHAScheduler by val macro-F1 per epoch; none: every trial runs to the end
    grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: int = 2  # ASHA keeps the top 1/reduction_factor at each rung
    # What ASHA stops: config (its seeds and folds together, by their mean at each rung, the same
    # decisions in any order: ecg_ray.results.analysis.rungs), trial (Ray Tune's ASHA, one trial at a time),
    # or auto: config when a config has several trials (repeats, search.seed, data.folds), else trial.
    group: str = "auto"

    PREFIX: ClassVar[str] = "scheduler."
    CONSTRAINTS: ClassVar[dict] = {
        "name": Options(SCHEDULER_NAMES),
        "group": Options(("auto", "config", "trial")),
        "grace_period": Interval(int, 1, None),
        "reduction_factor": Interval(int, 2, None),
    }


def _custom_resources(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and k not in ("CPU", "GPU") and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        for k, v in value.items()
    )


@dataclass(frozen=True)
class ResourcesConfig(Validated):
    """What each trial holds. One Ray Train worker per trial, on a GPU when the cluster has one."""

    use_gpu: str | bool = "auto"  # auto: a GPU per worker when the cluster has GPUs
    gpus_per_worker: float | str = "auto"  # auto: as many trials per GPU as fit (ecg_ray.tuning.packing); a fraction packs by hand
    cpus_per_worker: int = 1  # also the worker's torch thread count (fixed, for determinism)
    # The Tune trial that drives the Train run only waits on it: no CPU by default (it holds
    # DRIVER_MEMORY instead), so N CPUs run N one-CPU trials at once.
    cpus_per_trial_driver: float = 0.0
    max_concurrent_trials: int = 0  # 0: as many as the cluster fits
    # Trials Tune starts beyond those that fit, on a local Ray whose trial drivers hold no CPU: their
    # Tune driver and Train controller start while other trials train, and their worker takes the
    # next free slot, so a slot does not wait for a whole trial start-up. auto: one per CPU that the
    # training trials leave idle (a GPU node), at most one per slot; none where every CPU trains.
    # Only on a Ray this project is tested with (Train is told to wait for the slot by a private knob).
    trials_ahead: int | str = "auto"
    # On a local Ray without trials started ahead, a Tune actor keeps its trial's Train worker (the
    # process and its slot) when the trial finishes cleanly, and runs its next trial there: no new
    # process, torch import or data fetch per trial. false: a new worker process for every trial.
    reuse_workers: bool = True
    # How each trial runs on Ray. false: Ray's public API only (a Tune function trainable running a
    # one-worker DataParallelTrainer that reports through TuneReportCallback). true: the fast path
    # (ecg_ray.tuning._ray_internals: Train's controller in the Tune actor, kept workers), which leans
    # on Ray Train's internals and is refused on a Ray it was not tested with. auto: the fast path
    # on a tested Ray, else the public one; a line at the start says which.
    fast_path: str | bool = "auto"
    # How long Ray Train waits for a trial's worker to start before it retries (Ray's default,
    # 60 s, is too short on a loaded machine, where start-up alone can take that long). A private
    # knob of Ray Train: set on a Ray this project is tested with, Ray's own wait elsewhere.
    worker_start_timeout_s: float = 600.0
    # Extra custom resources per worker, e.g. {"a10g": 1} to pin trials to one node type.
    custom_resources_per_worker: dict = field(default_factory=dict)

    PREFIX: ClassVar[str] = "resources."
    CONSTRAINTS: ClassVar[dict] = {
        "custom_resources_per_worker": Rule(
            "a mapping of custom resource names (not CPU/GPU) to positive numbers", _custom_resources, invalid={"GPU": 1}
        ),
        "use_gpu": Options(("auto", True, False)),
        "gpus_per_worker": Rule("'auto' or a float in (0.0, 8.0]", lambda v: v == "auto" or (
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 8), invalid=0),
        "cpus_per_worker": Interval(int, 1, 256),
        "cpus_per_trial_driver": Interval(float, 0.0, 64.0, "both"),
        "max_concurrent_trials": Interval(int, 0, None),
        "trials_ahead": Rule("'auto' or an integer >= 0", lambda v: v == "auto" or (
            isinstance(v, int) and not isinstance(v, bool) and v >= 0), invalid=-1),
        "worker_start_timeout_s": Interval(float, 0.0, 86400.0, "right"),
        "reuse_workers": Options((True, False)),
        "fast_path": Options(FAST_PATH),
    }

    def check_together(self) -> None:
        if self.gpus_per_worker != "auto" and self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            fail("resources.gpus_per_worker", "a fraction in (0, 1] or a whole number", self.gpus_per_worker)
        if self.trials_ahead not in ("auto", 0) and self.cpus_per_trial_driver > 0:
            fail("resources.trials_ahead", "0 or 'auto' while resources.cpus_per_trial_driver > 0 (drivers started "
                 "ahead would hold the CPUs their workers need)", self.trials_ahead)


@dataclass(frozen=True)
class ReportConfig(Validated):
    """What `ecg-ray tune` measures for the report after its trials (ecg_ray.results.analysis.cost)."""

    # Timed forward passes (after a warm-up) whose median is each model shape's inference latency
    # at batch 1 and 256, on the trials' device; 0: no latency (parameters and MACs are still counted).
    latency_repeats: int = 5

    PREFIX: ClassVar[str] = "report."
    CONSTRAINTS: ClassVar[dict] = {"latency_repeats": Interval(int, 0, 1000)}


def _tracking_name(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value.strip()))


# What the MLflow the extra installs (3.x) takes as a tracking URI: a server or a database. Its file store
# (file:///path, a plain folder) is refused by MLflow itself ("maintenance mode") unless the user opts in
# with MLFLOW_ALLOW_FILE_STORE=true, as MLflow's message says; then file:// is accepted here too.
MLFLOW_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
MLFLOW_URI = ("an MLflow tracking URI: a server (http://127.0.0.1:5000) or a database (sqlite:///mlflow.db, "
              "postgresql://...); file:///path only with MLFLOW_ALLOW_FILE_STORE=true, as MLflow 3 refuses its file "
              "store otherwise")


def mlflow_uri_ok(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        return False
    from ecg_ray.storage import scheme

    kind = scheme(value).split("+")[0]  # postgresql+psycopg2
    allowed = MLFLOW_SCHEMES + (("file",) if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true" else ())
    return kind in allowed and len(value) > len(kind) + 3


@dataclass(frozen=True)
class TrackingConfig(Validated):
    """Where runs are also logged besides the experiment folder (which stays the record)."""

    # An MLflow tracking server (http://host:5000) or a database (sqlite:///mlflow.db); a folder
    # (file:///path) only with MLFLOW_ALLOW_FILE_STORE=true (MLflow 3 refuses its file store otherwise);
    # null: no MLflow. Logged from the driver only, so on a cluster a server the head can reach (a
    # local path is the head's disk). Needs the `mlflow` extra.
    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None  # the MLflow experiment; null: the experiment's name

    PREFIX: ClassVar[str] = "tracking."
    CONSTRAINTS: ClassVar[dict] = {
        "mlflow_uri": Rule(MLFLOW_URI + "; or null", mlflow_uri_ok, invalid=""),
        "mlflow_experiment": Rule("an MLflow experiment name or null", _tracking_name, invalid=""),
    }
