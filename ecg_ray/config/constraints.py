"""Allowed names and ranges as data, one validator, one message format (scikit-learn's
`_param_validation` style): "The 'lr' parameter must be a float in (0.0, 1.0]. Got -3 instead."

The registries that implement the names (optimizers, data sources, schedulers, export formats)
live with their stage; tests/test_contracts.py checks each against the names declared here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ecg_ray.errors import ConfigError

DEFAULT_STORAGE = "~/ecg_ray_results"

# --- the names each registry must implement -----------------------------------------------

OPTIMIZER_NAMES = ("adam", "sgd")  # ecg_ray.training.loop.OPTIMIZERS
SCHEDULER_NAMES = ("asha", "none")  # ecg_ray.tuning.schedulers.SCHEDULERS
LR_SCHEDULES = ("constant", "cosine", "onecycle", "step")  # ecg_ray.training.loop.LR_SCHEDULES
CLASS_BALANCE = ("weighted_loss", "sampler", "none")  # ecg_ray.training.loop.build_trial / train_epoch
NORMALIZE = ("none", "zscore")  # ecg_ray.training.model.ECGModel
TRAIN_CROPS = ("centre", "random")  # ecg_ray.training.loop.train_epoch
DIFFICULTIES = ("realistic", "easy")  # ecg_ray.data.synthetic.generate (data.difficulty)
PRECISIONS = ("fp32", "bf16")  # ecg_ray.training.loop.autocast
AUGMENTATIONS = ("scale", "noise", "stretch", "burst", "wander")  # ecg_ray.training.augment; TrialConfig.aug_<name>[_p]
# search.algorithm: the grid as listed; num_samples random draws; or an adaptive searcher by name: num_samples
# configs suggested in batches, each batch from the results of the batches before. Each adaptive searcher is
# one module with `suggest_batch(space, seed, batch, n, history) -> [draw, ...]` (and, optionally,
# `require()`, raising a ConfigError that names what is missing); ecg_ray.tuning.searchers wraps any of them
# in the seeded, batched, resumable Tune searcher. A second searcher: its module, and its name here.
ADAPTIVE_SEARCHERS = {"optuna": "ecg_ray.tuning.optuna_search"}  # name -> module (data: nothing is imported here)
SEARCH_ALGORITHMS = ("grid", "random", *ADAPTIVE_SEARCHERS)
# resources.fast_path: how a trial runs on Ray (ecg_ray.tuning.paths): "auto" takes the fast path on the
# Ray releases it is tested with, Ray's public API elsewhere.
FAST_PATH = ("auto", True, False)
# search.<key>: {name: args}: Ray Tune's names; what each draws, and for which keys (SearchSpace).
DISTRIBUTIONS = ("choice", "loguniform", "quniform", "randint", "uniform")
EXPORT_FORMATS = ("csv", "markdown", "json", "parquet", "latex")  # ecg_ray.results.tables.export.EXPORTERS
DEFAULT_EXPORT_FORMATS = ("csv", "markdown", "json")


@dataclass(frozen=True)
class SourceRule:
    """What a data source (ecg_ray.data.sources.SOURCES) requires of the data section."""

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


# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` reads as the string '1e-3'.
# For keys that take a float, such a string is the number the user meant.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
