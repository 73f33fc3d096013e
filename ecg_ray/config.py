"""Experiment files (YAML) -> typed, frozen, validated config objects. Pure data.

    python -c "from ecg_ray.config import load_experiment; print(load_experiment('experiments/quick.yaml'))"

Every key is known. Allowed names and ranges are declared here as values
(scikit-learn's `_param_validation` style): each config class maps its fields
to a constraint, one validator checks them, and every error has one format,
"The 'lr' parameter must be a float in (0.0, 1.0]. Got -3 instead.". The
registries that implement the names (optimizers, data sources, schedulers,
export formats) live with their stage; tests/test_contracts.py checks that each
matches the names declared here. Reading an experiment file therefore imports
no torch, pandas, scikit-learn or Ray.
"""

from __future__ import annotations

import itertools
import math
import random
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import yaml

from ecg_ray import expdir
from ecg_ray.errors import ConfigError

DEFAULT_STORAGE = "~/ecg_ray_results"

# --- the names each registry must implement -----------------------------------------------

OPTIMIZER_NAMES = ("adam", "sgd")  # ecg_ray.train.OPTIMIZERS
SCHEDULER_NAMES = ("asha", "none")  # ecg_ray.schedulers.SCHEDULERS
LR_SCHEDULES = ("constant", "cosine", "onecycle", "step")  # ecg_ray.train.LR_SCHEDULES
CLASS_BALANCE = ("weighted_loss", "sampler", "none")  # ecg_ray.train.build_trial / train_epoch
NORMALIZE = ("none", "zscore")  # ecg_ray.model.ECGModel
TRAIN_CROPS = ("centre", "random")  # ecg_ray.train.train_epoch
DIFFICULTIES = ("realistic", "easy")  # ecg_ray.synthetic.generate (data.difficulty)
PRECISIONS = ("fp32", "bf16")  # ecg_ray.train.autocast
AUGMENTATIONS = ("scale", "noise", "stretch", "burst", "wander")  # ecg_ray.augment; TrialConfig.aug_<name>[_p]
# search.algorithm: the grid as listed; num_samples random draws; or num_samples configs that Optuna's
# TPE suggests in batches, each batch from the results of the batches before (ecg_ray.optuna_search).
SEARCH_ALGORITHMS = ("grid", "random", "optuna")
# search.<key>: {name: args}: Ray Tune's names; what each draws, and for which keys (SearchSpace).
DISTRIBUTIONS = ("choice", "loguniform", "quniform", "randint", "uniform")
EXPORT_FORMATS = ("csv", "markdown", "json", "parquet", "latex")  # ecg_ray.report.EXPORTERS
DEFAULT_EXPORT_FORMATS = ("csv", "markdown", "json")


@dataclass(frozen=True)
class SourceRule:
    """What a data source (ecg_ray.sources.SOURCES) requires of the data section."""

    needs_path: bool = True  # data.path is required
    pairable: bool = False  # data.val_path may name a second (val) file


SOURCE_RULES = {
    "cinc2017": SourceRule(),
    "parquet": SourceRule(pairable=True),
    "pickle": SourceRule(pairable=True),
    "synthetic": SourceRule(needs_path=False),
}

# --- constraints as values ------------------------------------------------------------------


class Constraint:
    """A set of allowed values: a membership test, a description, and one value outside it."""

    def allows(self, value: Any) -> bool:
        raise NotImplementedError

    def invalid_value(self) -> Any:
        """A value this constraint refuses (for contract tests)."""
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Interval(Constraint):
    """Numbers between lo and hi (None: unbounded); `closed` says which ends are included."""

    kind: type  # int or float
    lo: float | None
    hi: float | None
    closed: str = "both"  # both, left, right, neither

    def allows(self, value: Any) -> bool:
        if self.kind is int:
            if not _is_int(value):
                return False
        elif not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            return False
        lo_ok = self.lo is None or (value >= self.lo if self.closed in ("both", "left") else value > self.lo)
        hi_ok = self.hi is None or (value <= self.hi if self.closed in ("both", "right") else value < self.hi)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        if self.kind is int:
            lo = "-inf" if self.lo is None else self.lo
            hi = "inf" if self.hi is None else self.hi
            return f"an int in [{lo}, {hi}]"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"a float in {left}{float(self.lo)}, {float(self.hi)}{right}"

    def invalid_value(self) -> Any:
        if self.lo is not None:
            return self.lo - 1
        return self.hi + 1


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values."""

    options: tuple

    def allows(self, value: Any) -> bool:
        return value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def invalid_value(self) -> Any:
        return "not-a-valid-option"


@dataclass(frozen=True)
class Rule(Constraint):
    """Any other constraint: a predicate, its description, and a value it refuses."""

    description: str
    predicate: Callable[[Any], bool]
    invalid: Any = None

    def allows(self, value: Any) -> bool:
        return bool(self.predicate(value))

    def __str__(self) -> str:
        return self.description

    def invalid_value(self) -> Any:
        return self.invalid


OPTIONAL_STR = Rule("a string or null", lambda v: v is None or isinstance(v, str), invalid=3)


def fail(key: str, allowed: Any, value: Any) -> None:
    """Raise the one error format: the key, what is allowed, and the value given."""
    raise ConfigError(f"The '{key}' parameter must be {allowed}. Got {value!r} instead.")


def validate(key: str, value: Any, constraint: Constraint) -> Any:
    """Return `value` if `constraint` allows it, else raise ConfigError naming key, rule and value."""
    if not constraint.allows(value):
        fail(key, constraint, value)
    return value


class Validated:
    """Mixin for frozen config dataclasses: CONSTRAINTS (field -> Constraint) checked on creation."""

    PREFIX: ClassVar[str] = ""
    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {}

    def __post_init__(self):
        for name, constraint in self.CONSTRAINTS.items():
            validate(self.PREFIX + name, getattr(self, name), constraint)
        self.check_together()

    def check_together(self) -> None:
        """Rules that involve several fields."""


# --- the config sections --------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig(Validated):
    """Where the records come from and how they are prepared (see ecg_ray.sources)."""

    source: str = "synthetic"
    path: str | None = None  # file or folder; the train file for a pickle/Parquet pair
    val_path: str | None = None  # the val file of a pickle/Parquet pair
    test_path: str | None = None  # a given held-out test set: challenge folder, .mat/.hea record, .parquet or .pkl
    n_records: int = 8528  # synthetic only
    # synthetic only: realistic (as hard as CinC 2017, 8% label noise) or easy (the first generator)
    difficulty: str = "realistic"
    target_length: int = 9000
    sampling_rate: int = 300
    min_length: int = 2700
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    on_bad_record: str = "error"
    cache_dir: str | None = None  # default: $ECG_RAY_CACHE or ~/.cache/ecg_ray
    # Records outside these amplitude limits (ADC units, 1000 per mV) are bad records:
    min_peak_to_peak: float = 50.0  # below 0.05 mV from lowest to highest: a dead lead, or a signal in mV
    max_abs_amplitude: float = 25000.0  # beyond 25 mV: not an ECG (real CinC records stay within 11 mV)
    trust_pickle: bool = False  # a pickle runs code stored in it when loaded: only your own files

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
        "val_fraction": Interval(float, 0.0, 1.0, "neither"),
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
                f"{what}: loading a pickle runs code stored in it. If you made it yourself, "
                "pass --trust-pickle (or set `trust_pickle: true` under `data:`); better, convert it once with "
                "`ecg-ray data convert --trust-pickle FILE.pkl FILE.parquet` and use the Parquet file."
            )
        if self.test_path and self.test_fraction > 0:
            raise ConfigError(
                f"Both data.test_path ({self.test_path!r}) and data.test_fraction ({self.test_fraction}) ask for a test "
                "split. Use one: a given test set (test_path, --test-data) or one split off the data (test_fraction)."
            )
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

    lr: float = 1e-3
    hidden_size: int = 128
    dropout: float = 0.2
    optimizer: str = "adam"
    batch_size: int = 32
    epochs: int = 6
    # Training knobs beyond the notebook; each default is the notebook's behaviour.
    weight_decay: float = 0.0  # L2 penalty of the optimizer
    lr_schedule: str = "constant"  # the learning rate by epoch (ecg_ray.train.lr_factor)
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
    # The model's shape (ecg_ray.model); each default is the notebook's.
    gru_layers: int = 1
    bidirectional: bool = False
    conv_channels: int = 16  # of the first conv block; the second has twice as many
    n_fft: int = 256
    hop_length: int = 128
    # Augmentation of training batches (ecg_ray.augment): a probability per record and a strength
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

    CONSTRAINTS: ClassVar[dict] = {
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
    }

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

    name: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2

    PREFIX: ClassVar[str] = "scheduler."
    CONSTRAINTS: ClassVar[dict] = {
        "name": Options(SCHEDULER_NAMES),
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
    gpus_per_worker: float | str = "auto"  # auto: as many trials per GPU as fit (ecg_ray.packing); a fraction packs by hand
    cpus_per_worker: int = 1  # also the worker's torch thread count (fixed, for determinism)
    # The Tune trial that drives the Train run only waits on it: no CPU by default (it holds
    # DRIVER_MEMORY instead), so N CPUs run N one-CPU trials at once.
    cpus_per_trial_driver: float = 0.0
    max_concurrent_trials: int = 0  # 0: as many as the cluster fits
    # Trials Tune starts beyond those that fit, on a local Ray whose trial drivers hold no CPU: their
    # Tune driver and Train controller start while other trials train, and their worker takes the
    # next free slot, so a slot does not wait for a whole trial start-up. auto: one per CPU that the
    # training trials leave idle (a GPU node), at most one per slot; none where every CPU trains.
    trials_ahead: int | str = "auto"
    # On a local Ray without trials started ahead, a Tune actor keeps its trial's Train worker (the
    # process and its slot) when the trial finishes cleanly, and runs its next trial there: no new
    # process, torch import or data fetch per trial. false: a new worker process for every trial.
    reuse_workers: bool = True
    # How long Ray Train waits for a trial's worker to start before it retries (Ray's default,
    # 60 s, is too short on a loaded machine, where start-up alone can take that long).
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
    }

    def check_together(self) -> None:
        if self.gpus_per_worker != "auto" and self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            fail("resources.gpus_per_worker", "a fraction in (0, 1] or a whole number", self.gpus_per_worker)
        if self.trials_ahead not in ("auto", 0) and self.cpus_per_trial_driver > 0:
            fail("resources.trials_ahead", "0 or 'auto' while resources.cpus_per_trial_driver > 0 (drivers started "
                 "ahead would hold the CPUs their workers need)", self.trials_ahead)


def _has_repeats(values: list) -> bool:
    seen: list = []
    for v in values:
        if any(v == w and type(v) is type(w) for w in seen):
            return True
        seen.append(v)
    return False


ALGORITHM_KEY, SAMPLES_KEY = "algorithm", "num_samples"  # search.algorithm, search.num_samples
# search.suggest_batch: configs Optuna suggests at a time (the next batch waits for this one's results).
# The suggestions depend on it, never on how many trials run at once, so they are reproducible.
BATCH_KEY = "suggest_batch"


def _distribution(key: str, spec: dict) -> tuple[str, tuple]:
    """Check `search.KEY: {name: args}` against what KEY takes; returns (name, args)."""
    where = f"search.{key}"
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        fail(where, f"a list of values or one distribution {{name: [arguments]}}, name one of {', '.join(DISTRIBUTIONS)}", spec)
    ((name, args),) = spec.items()
    constraint = TrialConfig.CONSTRAINTS[key]
    if isinstance(args, list):  # YAML 1.1 reads 1e-4 as a string
        args = [float(a) if isinstance(a, str) and _NUMBER.fullmatch(a.strip()) else a for a in args]
    if name == "choice":
        if not isinstance(args, list) or not args or _has_repeats(args):
            fail(where, "{choice: [a non-empty list without repeated values]}", spec)
        for value in args:
            validate(where, value, constraint)
        return name, tuple(args)
    if not isinstance(constraint, Interval):
        fail(where, f"a list of values or {{choice: [...]}} ({key} takes {constraint}, not a range)", spec)
    arity = 3 if name == "quniform" else 2
    if not (isinstance(args, list) and len(args) == arity and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        fail(where, f"{{{name}: [{'low, high, q' if arity == 3 else 'low, high'}]}} with numbers", spec)
    lo, hi = args[0], args[1]
    if not lo < hi:
        fail(where, f"a {name} range with low < high", spec)
    if name == "randint":
        if constraint.kind is not int or not all(isinstance(a, int) for a in args):
            fail(where, f"{{uniform|loguniform|quniform: [low, high]}} ({key} takes a float)", spec)
        validate(where, lo, constraint)
        validate(where, hi - 1, constraint)  # randint's high is exclusive, as in Ray Tune
        return name, (lo, hi)
    if constraint.kind is int:
        fail(where, f"{{randint: [low, high]}} or {{choice: [...]}} ({key} takes an int)", spec)
    if name == "loguniform" and lo <= 0:
        fail(where, "a loguniform range above 0", spec)
    if name == "quniform" and not 0 < args[2] <= hi - lo:
        fail(where, "a quniform step q in (0, high - low]", spec)
    validate(where, float(lo), constraint)
    validate(where, float(hi), constraint)
    return name, tuple(float(a) for a in args)


def _draw(name: str, args: tuple, rng: random.Random):
    """One value of a distribution, from rng.random() only: Python keeps that stream the same
    for the same seed across releases, so a file and its seed always sample the same configs."""
    u = rng.random()
    if name == "choice":
        return args[int(u * len(args))]
    if name == "randint":
        return args[0] + int(u * (args[1] - args[0]))
    if name == "loguniform":
        value = math.exp(math.log(args[0]) + u * (math.log(args[1]) - math.log(args[0])))
    elif name == "quniform":
        value = round((args[0] + u * (args[1] - args[0])) / args[2]) * args[2]
    else:
        value = args[0] + u * (args[1] - args[0])
    return float(f"{value:.6g}")  # readable in tables and YAML, and still the value trained with


@dataclass(frozen=True)
class SearchSpace:
    """What to try: grid axes (for each search key in SEARCH_KEYS order, the values; one value =
    fixed), optionally times an explicit list of configs (`search.configs`, as `ecg-ray repeat`
    writes), and with `search.algorithm: random`, `num_samples` draws from the keys given as
    distributions, each draw times the grid (so seeds pair up, as in Ray Tune).

    Builds the list of TrialConfigs (`grid`) and, from it, the keyed trials that Ray Tune
    is given as its points (`trials`), so the two can never disagree. Random draws are made
    here, seeded by the experiment's seed: the experiment file records them (its "grid"),
    a resume draws the same ones, and ASHA and resume work as for a grid.
    """

    axes: tuple[tuple[str, tuple], ...] = ()
    configs: tuple[tuple[tuple[str, Any], ...], ...] = ()  # each a partial TrialConfig, as sorted items
    distributions: tuple[tuple[str, str, tuple], ...] = ()  # (key, distribution name, arguments)
    num_samples: int = 1
    algorithm: str = "grid"
    suggest_batch: int = 4  # optuna only

    @property
    def adaptive(self) -> bool:
        """Whether the configs are chosen while the experiment runs (Optuna: each batch from the
        results of the batches before), so that only the experiment folder knows them all."""
        return self.algorithm == "optuna"

    @classmethod
    def from_raw(cls, raw: dict) -> "SearchSpace":
        for key in raw:
            validate("search key", key, Options((*SEARCH_KEYS, CONFIGS_KEY, ALGORITHM_KEY, SAMPLES_KEY, BATCH_KEY)))
        algorithm = raw.get(ALGORITHM_KEY, "grid")
        validate(f"search.{ALGORITHM_KEY}", algorithm, Options(SEARCH_ALGORITHMS))
        num_samples = raw.get(SAMPLES_KEY, 1)
        validate(f"search.{SAMPLES_KEY}", num_samples, Interval(int, 1, 100_000))
        suggest_batch = raw.get(BATCH_KEY, 4)
        validate(f"search.{BATCH_KEY}", suggest_batch, Interval(int, 1, 10_000))
        if BATCH_KEY in raw and algorithm != "optuna":
            fail(f"search.{BATCH_KEY}", "set only with search.algorithm: optuna", suggest_batch)
        configs = cls._configs(raw[CONFIGS_KEY], raw) if CONFIGS_KEY in raw else ()
        axes, distributions = [], []
        for key in SEARCH_KEYS:
            if key not in raw:
                continue
            if isinstance(raw[key], dict):
                distributions.append((key, *_distribution(key, raw[key])))
                continue
            values = raw[key] if isinstance(raw[key], list) else [raw[key]]
            if not values:
                fail(f"search.{key}", "a value or a non-empty list of values", [])
            if _has_repeats(values):
                fail(f"search.{key}", "a list without repeated values (each would be the same trial)", values)
            axes.append((key, tuple(values)))
        if algorithm == "grid" and distributions:
            key, name, _ = distributions[0]
            raise ConfigError(f"search.{key} is a distribution ({name}); set `search.algorithm: random` and "
                              f"`search.num_samples` to draw from it, or list the values to try.")
        if algorithm == "grid" and SAMPLES_KEY in raw:
            fail(f"search.{SAMPLES_KEY}", "set only with search.algorithm: random or optuna (for seeds use `repeats`)", num_samples)
        if algorithm != "grid" and not distributions:
            raise ConfigError(f"search.algorithm '{algorithm}' needs at least one search key given as a distribution, "
                              "e.g. `lr: {loguniform: [1e-4, 3e-3]}`.")
        return cls(tuple(axes), configs, tuple(distributions), num_samples, algorithm, suggest_batch)

    @staticmethod
    def _configs(listed: Any, raw: dict) -> tuple:
        allowed = tuple(k for k in SEARCH_KEYS if k not in raw and k != "seed")
        ok = isinstance(listed, list) and listed and all(
            isinstance(c, dict) and c and set(c) <= set(allowed) and not any(isinstance(v, (list, dict)) for v in c.values())
            for c in listed
        )
        if not ok:
            fail(f"search.{CONFIGS_KEY}", f"a non-empty list of mappings of the keys {', '.join(allowed)}", listed)
        configs = [tuple(sorted(c.items())) for c in listed]
        if len(set(configs)) < len(configs):
            fail(f"search.{CONFIGS_KEY}", "a list without repeated configs (each would be the same trial)", listed)
        return tuple(configs)

    def samples(self, seed: int) -> list[dict]:
        """The random draws: num_samples distinct {key: value} (one empty draw for a grid)."""
        if self.adaptive:
            raise ConfigError("An Optuna search chooses its configs while it runs: they are in its experiment "
                              "folder (ecg_ray_experiment.json), not in its experiment file.")
        if not self.distributions:
            return [{}]
        rng = random.Random(f"ecg_ray search {seed}")
        out, seen = [], set()
        for _ in range(100 * self.num_samples):
            draw = {key: _draw(name, args, rng) for key, name, args in self.distributions}
            if tuple(draw.items()) not in seen:
                seen.add(tuple(draw.items()))
                out.append(draw)
                if len(out) == self.num_samples:
                    return out
        fail(f"search.{SAMPLES_KEY}", f"at most {len(out)} here (the distributions allow no more distinct draws)", self.num_samples)

    def combos(self, seed: int) -> list[dict]:
        """What each draw is tried with: each listed config (if any) times the axes in the file's
        order (last key varies fastest), as partial configs with the seed."""
        keys = [k for k, _ in self.axes]
        return [
            {"seed": seed, **dict(config), **dict(zip(keys, combo))}
            for config in (self.configs or ((),))
            for combo in itertools.product(*(v for _, v in self.axes))
        ]

    def grid(self, seed: int, draws: list[dict] | None = None) -> list[TrialConfig]:
        """Every trial as a TrialConfig: each draw (by default the random draws, if any) times
        each combo (see combos)."""
        combos = self.combos(seed)
        return [TrialConfig(**{**combo, **draw}) for draw in (self.samples(seed) if draws is None else draws) for combo in combos]

    def trials(self, seed: int, draws: list[dict] | None = None, first: int = 0) -> dict[str, TrialConfig]:
        """Every grid point under its trial key, t0000, t0001, ... in grid order (from t`first`).

        The key names a trial for good: its Ray Train run (checkpoints), its status and its
        rows in the tables, across retries and resumes. Tune gets exactly these points.
        """
        return {f"t{first + i:04d}": trial for i, trial in enumerate(self.grid(seed, draws))}

    @property
    def n_trials(self) -> int:
        """How many trials the experiment runs: draws (1 for a grid) times combos."""
        combos = len(self.configs or ((),)) * math.prod(len(v) for _, v in self.axes)
        return (self.num_samples if self.distributions else 1) * combos

    def values(self, key: str) -> list:
        """The values `key` is given: listed ones, a choice's, a range's ends ([] when it keeps its default)."""
        values = [v for k, vs in self.axes if k == key for v in vs]
        values += [v for c in self.configs for k, v in c if k == key]
        for k, name, args in self.distributions:
            if k == key:
                values += list(args) if name == "choice" else [args[0], args[1] - 1 if name == "randint" else args[1]]
        return values

    def largest(self, key: str) -> Any:
        """The largest value `key` takes in any trial (for sizing resources before the trials exist)."""
        return max(self.values(key), default=getattr(TrialConfig(), key))

    def check(self, seed: int) -> None:
        """Every trial is valid (for Optuna, every combo; each suggestion is checked as it is made)."""
        self.grid(seed, [{}] if self.adaptive else None)


def _folder_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "/" not in value and not value.startswith(".")


@dataclass(frozen=True)
class ExperimentConfig(Validated):
    """A whole experiment: data, the search grid, the scheduler, resources and storage."""

    name: str = "experiment"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    search: dict = field(default_factory=dict)  # key -> list of values (one value = fixed), as in the file
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    storage_path: str = DEFAULT_STORAGE
    max_failures: int = 2  # per trial: restarts (by Tune) from the last checkpoint
    repeats: int = 1  # seeds per config: seed, seed + 1, ..., seed + repeats - 1 (or list search.seed)
    origin: dict = field(default_factory=dict)  # where the experiment came from (written by `ecg-ray repeat`)

    CONSTRAINTS: ClassVar[dict] = {
        "name": Rule("a non-empty folder name without '/'", _folder_name, invalid="a/b"),
        "seed": Interval(int, 0, 2**32 - 1),
        "storage_path": Rule(
            "a local folder or a bucket URI such as s3://bucket/prefix", lambda v: isinstance(v, str) and bool(v), invalid=""
        ),
        "max_failures": Interval(int, -1, None),
        "repeats": Interval(int, 1, 1000),
        "origin": Rule("a mapping (provenance, written by `ecg-ray repeat`)", lambda v: isinstance(v, dict), invalid=[]),
    }

    def check_together(self) -> None:
        if self.repeats > 1 and "seed" in self.search:
            fail("repeats", "1 when search.seed lists the seeds (use one or the other)", self.repeats)
        self.search_space.check(self.seed)  # every grid point now, not inside a trial an hour later

    @property
    def seeds(self) -> list[int]:
        """The seeds every config runs with."""
        if "seed" in self.search:
            listed = self.search["seed"]
            return list(listed) if isinstance(listed, list) else [listed]
        return [self.seed + i for i in range(self.repeats)]

    @property
    def search_space(self) -> SearchSpace:
        raw = dict(self.search)
        if self.repeats > 1:
            raw["seed"] = self.seeds  # derived, so the grid names each (config, seed) trial
        return SearchSpace.from_raw(raw)

    def grid(self) -> list[TrialConfig]:
        """Every grid point as a TrialConfig, in the file's order (last key varies fastest)."""
        return self.search_space.grid(self.seed)

    def trials(self) -> dict[str, TrialConfig]:
        """Every grid point under its stable trial key (see SearchSpace.trials)."""
        return self.search_space.trials(self.seed)

    @property
    def n_trials(self) -> int:
        return self.search_space.n_trials

    @property
    def epochs(self) -> int:
        return self.search_space.largest("epochs")

    @property
    def storage_root(self) -> str:
        """storage_path with ~ expanded for local paths; a URI is kept as it is."""
        return expdir.expand(self.storage_path)

    @property
    def experiment_dir(self) -> expdir.ExperimentDir:
        """The experiment folder, storage_root/name."""
        return expdir.ExperimentDir.at(self.storage_root, self.name)

    @property
    def experiment_path(self) -> str:
        """storage_root/name as a string (a local path or a URI)."""
        return self.experiment_dir.path

    def to_dict(self) -> dict:
        return asdict(self)


# --- what crosses the Ray boundary ----------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """How every trial of one experiment runs; recorded in the experiment file."""

    use_gpu: bool
    resources_per_worker: dict
    threads: int  # torch threads per worker: fixed, because CPU float reductions depend on it
    data_hash: str
    max_failures: int  # restarts per trial, by Tune (recorded; Ray Train's own retries are off)
    worker_start_timeout_s: float = 600.0
    # Ray Train's settings for each trial's run (environment variables its controller reads).
    train_env: dict = field(default_factory=dict)
    # Whether the Ray has an autoscaler that Ray Train asks for each trial's worker: not a local Ray
    # that ecg_ray started (see ecg_ray.trial.NoAutoscaler).
    autoscaler: bool = True
    # Whether a trial's Tune actor keeps its finished worker for its next trial (ecg_ray.slots):
    # resources.reuse_workers, on a local Ray without trials started ahead.
    reuse_workers: bool = False


# cuBLAS workspace setting that makes CUDA matrix products deterministic (set before CUDA starts).
CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class WorkerSpec:
    """What the Ray Train worker of one trial receives."""

    trial: TrialConfig
    data_ref: Any  # ObjectRef of the PreparedData; nested in a dataclass, Ray leaves it unresolved
    data_hash: str
    threads: int
    use_gpu: bool
    driver_started: float = 0.0  # time.time() when the trial's Tune driver started (start-up is measured from it)


# --- reading experiment files ------------------------------------------------------------------

_SECTIONS = {"data": DataConfig, "scheduler": SchedulerConfig, "resources": ResourcesConfig}
# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` reads as the string '1e-3'.
# For keys that take a float, such a string is the number the user meant.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _floats_from_strings(cls, raw: dict) -> dict:
    """`raw` with numeric strings turned into floats for the keys of `cls` that take a float."""
    def number(key, value):
        takes_float = isinstance(cls.CONSTRAINTS.get(key), Interval) and cls.CONSTRAINTS[key].kind is float
        if takes_float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
        if takes_float and isinstance(value, list):
            return [number(key, v) for v in value]
        return value

    return {key: number(key, value) for key, value in raw.items()}


def _build(cls, raw: Any, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(prefix, "a mapping of keys to values", raw)
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"Unknown key '{prefix}.{key}'. Allowed keys in '{prefix}': {', '.join(sorted(known))}."
            )
    return cls(**_floats_from_strings(cls, raw))


def experiment_from_dict(raw: Any, origin: str = "<dict>") -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: an experiment file must be a YAML mapping, got {type(raw).__name__}.")
    top = {f.name for f in fields(ExperimentConfig)}
    for key in raw:
        if key not in top:
            raise ConfigError(f"{origin}: unknown key '{key}'. Allowed top-level keys: {', '.join(sorted(top))}.")
    values = dict(raw)
    try:
        for key, cls in _SECTIONS.items():
            values[key] = _build(cls, raw.get(key), key)
        search = raw.get("search") or {}
        if not isinstance(search, dict):
            fail("search", "a mapping of search keys to values or lists", search)
        values["search"] = _floats_from_strings(TrialConfig, search)
        return ExperimentConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err}") from None


def load_experiment(path: str | os.PathLike | None, **overrides) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Args:
        path: the YAML file; None for the defaults.
        overrides: dotted keys to replace after reading, e.g. {"data.source": "pickle"}.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Experiment file {path} does not exist. Pass a YAML file such as experiments/quick.yaml.")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err}). Fix the line it names.") from None
        if raw is None or raw == {}:
            raise ConfigError(
                f"{path} is empty. An experiment file needs at least a `search:` section; "
                "copy experiments/quick.yaml and edit it."
            )
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node, dict) else node
        node[leaf] = value
    return experiment_from_dict(raw, origin=str(path) if path is not None else "defaults")


def with_data(cfg: ExperimentConfig, **changes) -> ExperimentConfig:
    """A copy of `cfg` with DataConfig fields replaced (validated again)."""
    return replace(cfg, data=replace(cfg.data, **changes))
