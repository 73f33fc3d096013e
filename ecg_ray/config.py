"""Experiment files (YAML) -> typed, frozen, validated config objects.

    python -c "from ecg_ray.config import load_experiment; print(load_experiment('experiments/quick.yaml'))"

Every key is known. An unknown key, a wrong type or an out-of-range value
raises ConfigError naming the key, the value and what is allowed.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ecg_ray.errors import ConfigError

SEARCH_KEYS = ("lr", "hidden_size", "dropout", "optimizer", "batch_size", "epochs")
DEFAULT_STORAGE = "~/ecg_ray_results"


def _fail(key: str, allowed: str, value: Any) -> None:
    raise ConfigError(f"The '{key}' parameter must be {allowed}. Got {value!r} instead.")


def check_int(key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(key, f"an int in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]", value)
    return value


def check_float(key: str, value: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        _fail(key, f"a float in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}", value)
    return float(value)


def check_choice(key: str, value: Any, choices) -> str:
    if value not in choices:
        _fail(key, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_optional_str(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        _fail(key, "a string or null", value)
    return value


@dataclass(frozen=True)
class DataConfig:
    """Where the records come from and how they are prepared (see ecg_ray.sources)."""

    source: str = "synthetic"
    path: str | None = None  # file or folder; the train file for a pickle/Parquet pair
    val_path: str | None = None  # the val file of a pickle/Parquet pair
    n_records: int = 8528  # synthetic only
    target_length: int = 9000
    sampling_rate: int = 300
    min_length: int = 2700
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    on_bad_record: str = "error"
    cache_dir: str | None = None  # default: $ECG_RAY_CACHE or ~/.cache/ecg_ray

    def __post_init__(self):
        from ecg_ray.sources import SOURCES

        check_choice("data.source", self.source, sorted(SOURCES))
        check_optional_str("data.path", self.path)
        check_optional_str("data.val_path", self.val_path)
        check_optional_str("data.cache_dir", self.cache_dir)
        check_int("data.n_records", self.n_records, 8, 1_000_000)
        check_int("data.target_length", self.target_length, 256, 1_000_000)
        check_int("data.sampling_rate", self.sampling_rate, 1, 100_000)
        check_int("data.min_length", self.min_length, 1, 1_000_000)
        check_float("data.val_fraction", self.val_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        check_float("data.test_fraction", self.test_fraction, 0.0, 1.0, hi_open=True)
        if self.val_fraction + self.test_fraction >= 1.0:
            _fail("data.val_fraction + data.test_fraction", "below 1", self.val_fraction + self.test_fraction)
        check_choice("data.on_bad_record", self.on_bad_record, ("error", "skip"))
        SOURCES[self.source].check_config(self)


@dataclass(frozen=True)
class TrialConfig:
    """One grid point: everything a trial needs besides the data. Checked again inside the trial."""

    lr: float = 1e-3
    hidden_size: int = 128
    dropout: float = 0.2
    optimizer: str = "adam"
    batch_size: int = 32
    epochs: int = 6
    seed: int = 42

    def __post_init__(self):
        from ecg_ray.train import OPTIMIZERS

        check_float("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("hidden_size", self.hidden_size, 1, 8192)
        check_float("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_choice("optimizer", self.optimizer, sorted(OPTIMIZERS))
        check_int("batch_size", self.batch_size, 1, 65536)
        check_int("epochs", self.epochs, 1, 10_000)
        check_int("seed", self.seed, 0, 2**32 - 1)

    @classmethod
    def from_dict(cls, values: dict) -> "TrialConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            _fail("trial config", "made of the keys " + ", ".join(sorted(known)), unknown)
        return cls(**values)


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping. 'asha' stops weak trials on val macro-F1; 'none' runs every epoch of every trial."""

    name: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2

    def __post_init__(self):
        from ecg_ray.schedulers import SCHEDULERS

        check_choice("scheduler.name", self.name, sorted(SCHEDULERS))
        check_int("scheduler.grace_period", self.grace_period, 1)
        check_int("scheduler.reduction_factor", self.reduction_factor, 2)


@dataclass(frozen=True)
class ResourcesConfig:
    """What each trial holds. One Ray Train worker per trial, on a GPU when the cluster has one."""

    use_gpu: str | bool = "auto"  # auto: a GPU per worker when the cluster has GPUs
    gpus_per_worker: float = 1.0  # a fraction packs several small trials on one GPU
    cpus_per_worker: int = 1  # also the worker's torch thread count (fixed, for determinism)
    cpus_per_trial_driver: float = 0.5  # the Tune trial that drives the Train run
    max_concurrent_trials: int = 0  # 0: as many as the cluster fits
    # Extra custom resources per worker, e.g. {"a10g": 1} to pin trials to one node type.
    custom_resources_per_worker: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.custom_resources_per_worker, dict) or not all(
            isinstance(k, str) and k not in ("CPU", "GPU") and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for k, v in self.custom_resources_per_worker.items()
        ):
            _fail("resources.custom_resources_per_worker", "a mapping of custom resource names (not CPU/GPU) to positive numbers", self.custom_resources_per_worker)
        check_choice("resources.use_gpu", self.use_gpu, ("auto", True, False))
        check_float("resources.gpus_per_worker", self.gpus_per_worker, 0.0, 8.0, lo_open=True)
        check_int("resources.cpus_per_worker", self.cpus_per_worker, 1, 256)
        check_float("resources.cpus_per_trial_driver", self.cpus_per_trial_driver, 0.0, 64.0, lo_open=True)
        check_int("resources.max_concurrent_trials", self.max_concurrent_trials, 0)
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            _fail("resources.gpus_per_worker", "a fraction in (0, 1] or a whole number", self.gpus_per_worker)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, the search grid, the scheduler, resources and storage."""

    name: str = "experiment"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    search: dict = field(default_factory=dict)  # key -> list of values (one value = fixed)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    storage_path: str = DEFAULT_STORAGE
    max_failures: int = 2  # per trial: worker restarts from the last checkpoint

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name.startswith("."):
            _fail("name", "a non-empty folder name without '/'", self.name)
        check_int("seed", self.seed, 0, 2**32 - 1)
        if not isinstance(self.storage_path, str) or not self.storage_path:
            _fail("storage_path", "a local folder or a bucket URI such as s3://bucket/prefix", self.storage_path)
        check_int("max_failures", self.max_failures, -1)
        for key in self.search:
            check_choice("search key", key, SEARCH_KEYS)
        self.grid()  # validates every grid point now, not inside a trial an hour later

    def grid(self) -> list[TrialConfig]:
        """Every grid point as a TrialConfig, in the file's order (last key varies fastest)."""
        keys = [k for k in SEARCH_KEYS if k in self.search]
        values = [v if isinstance(v, list) else [v] for v in (self.search[k] for k in keys)]
        for key, vals in zip(keys, values):
            if not vals:
                _fail(f"search.{key}", "a value or a non-empty list of values", [])
        return [TrialConfig(seed=self.seed, **dict(zip(keys, combo))) for combo in itertools.product(*values)]

    @property
    def epochs(self) -> int:
        return max(t.epochs for t in self.grid())

    @property
    def storage_root(self) -> str:
        """storage_path with ~ expanded for local paths; a URI is kept as it is."""
        return expand_storage(self.storage_path)

    @property
    def experiment_path(self) -> str:
        """storage_root/name: the experiment folder."""
        return join_path(self.storage_root, self.name)

    def to_dict(self) -> dict:
        return asdict(self)


def expand_storage(path: str) -> str:
    if "://" in path:
        return path.rstrip("/")
    return str(Path(os.path.expanduser(path)).resolve())


def join_path(base: str, *parts: str) -> str:
    """Join a local path or a URI."""
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


_SECTIONS = {"data": DataConfig, "scheduler": SchedulerConfig, "resources": ResourcesConfig}


def _build(cls, raw: Any, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(prefix, "a mapping of keys to values", raw)
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"Unknown key '{prefix}.{key}'. Allowed keys in '{prefix}': {', '.join(sorted(known))}."
            )
    return cls(**raw)


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
            _fail("search", "a mapping of search keys to values or lists", search)
        values["search"] = search
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
        raw = raw if raw is not None else {}
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
