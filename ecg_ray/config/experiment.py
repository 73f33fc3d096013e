"""A whole experiment (ExperimentConfig), and what crosses the Ray boundary for each trial
(RunSettings, WorkerSpec): typed values, never dicts read by string keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ecg_ray.config.constraints import DEFAULT_STORAGE, Interval, Rule, Validated, fail
from ecg_ray.config.search import SearchSpace
from ecg_ray.config.sections import DataConfig, ReportConfig, ResourcesConfig, SchedulerConfig, TrackingConfig, TrialConfig

def _folder_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "/" not in value and not value.startswith(".")


def _provenance(value: Any) -> bool:
    """`origin`: what `ecg-ray repeat` records (folder, data hash, trial ids), small and flat."""
    def scalar(v):
        return isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= 4096)

    return isinstance(value, dict) and len(value) <= 16 and all(
        isinstance(k, str) and (scalar(v) or (isinstance(v, list) and len(v) <= 10_000 and all(scalar(x) for x in v)))
        for k, v in value.items())


@dataclass(frozen=True)
class ExperimentConfig(Validated):
    """A whole experiment: data, the search grid, the scheduler, resources and storage."""

    name: str = "experiment"  # the experiment folder's name, under storage_path
    seed: int = 42  # the trials' seed (unless search.seed lists them), the split's and the draws'
    data: DataConfig = field(default_factory=DataConfig)
    search: dict = field(default_factory=dict)  # key -> list of values (one value = fixed), as in the file
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    storage_path: str = DEFAULT_STORAGE  # where experiment folders go: a local folder or s3://, gs://
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
        "origin": Rule("a mapping of at most 16 names to short strings, numbers or lists of them (provenance, "
                       "written by `ecg-ray repeat`)", _provenance, invalid={"experiment": [[1]]}),
    }

    def check_together(self) -> None:
        if self.repeats > 1 and "seed" in self.search:
            fail("repeats", "1 when search.seed lists the seeds (use one or the other)", self.repeats)
        if "fold" in self.search:
            fail("search.fold", "left out: data.folds: K runs every config on each of K folds", self.search["fold"])
        if self.data.folds and self.scheduler.name == "asha" and self.scheduler.group == "trial":
            fail("scheduler.group", "config or auto with data.folds: per-trial ASHA would stop a config's folds one "
                 "at a time, which biases its mean over folds", self.scheduler.group)
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
        if self.data.folds:
            raw["fold"] = list(range(self.data.folds))  # last: the folds of a (config, seed) are neighbours
        return SearchSpace.from_raw(raw)

    def grid(self) -> list[TrialConfig]:
        """Every grid point as a TrialConfig, in the file's order (last key varies fastest)."""
        return self.search_space.grid(self.seed)

    def trials(self) -> dict[str, TrialConfig]:
        """Every grid point under its stable trial key (see SearchSpace.trials)."""
        return self.search_space.trials(self.seed)

    @property
    def replicates(self) -> int:
        """The trials of each config: its seeds times its folds."""
        return len(self.seeds) * max(1, self.data.folds)

    @property
    def groups_trials(self) -> bool:
        """Whether ASHA decides per config (scheduler.group, auto: when a config has several trials)."""
        group = self.scheduler.group
        return self.scheduler.name == "asha" and (group == "config" or (group == "auto" and self.replicates > 1))

    @property
    def n_trials(self) -> int:
        return self.search_space.n_trials

    @property
    def epochs(self) -> int:
        return self.search_space.largest("epochs")

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
    # that ecg_ray started (see ecg_ray.tuning.trial.NoAutoscaler).
    autoscaler: bool = True
    # Whether a trial's Tune actor keeps its finished worker for its next trial (ecg_ray.tuning.fast_path):
    # resources.reuse_workers, on a local Ray without trials started ahead.
    reuse_workers: bool = False
    # Whether trials take the fast path (ecg_ray.tuning.fast_path): Ray Train's internals, on a tested Ray.
    fast_path: bool = False


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
