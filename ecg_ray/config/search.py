"""The search space: a grid, random draws or an Optuna space over TrialConfig's keys, and the
trial keys that name each point."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from ecg_ray.config.constraints import (
    ADAPTIVE_SEARCHERS, DISTRIBUTIONS, NUMBER, SEARCH_ALGORITHMS, Interval, Options, fail, validate,
)
from ecg_ray.config.models import args_text
from ecg_ray.config.sections import CONFIGS_KEY, SEARCH_KEYS, TrialConfig
from ecg_ray.errors import ConfigError

def _has_repeats(values: list) -> bool:
    seen: list = []
    for v in values:
        if any(v == w and type(v) is type(w) for w in seen):
            return True
        seen.append(v)
    return False


ALGORITHM_KEY, SAMPLES_KEY = "algorithm", "num_samples"  # search.algorithm, search.num_samples
# search.model_args: the model's own hyperparameters, a mapping (or a list of them: a grid axis), kept as
# JSON text from here on (hashable, one table cell); TrialConfig checks it against the model.
MODEL_ARGS_KEY = "model_args"


def _args(value: Any) -> Any:
    """A search.model_args mapping as sorted JSON; anything else as given (TrialConfig names what is wrong)."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return args_text(value)
    return value
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
        args = [float(a) if isinstance(a, str) and NUMBER.fullmatch(a.strip()) else a for a in args]
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
    suggest_batch: int = 4  # adaptive searchers only (optuna)

    @property
    def adaptive(self) -> bool:
        """Whether the configs are chosen while the experiment runs (an adaptive searcher, Optuna's TPE:
        each batch from the results of the batches before), so that only the experiment folder knows them all."""
        return self.algorithm in ADAPTIVE_SEARCHERS

    @classmethod
    def from_raw(cls, raw: dict) -> "SearchSpace":
        for key in raw:
            validate("search key", key, Options((*SEARCH_KEYS, CONFIGS_KEY, ALGORITHM_KEY, SAMPLES_KEY, BATCH_KEY)))
        algorithm = raw.get(ALGORITHM_KEY, "grid")
        validate(f"search.{ALGORITHM_KEY}", algorithm, Options(("grid", "random", *ADAPTIVE_SEARCHERS)))  # as registered now
        num_samples = raw.get(SAMPLES_KEY, 1)
        validate(f"search.{SAMPLES_KEY}", num_samples, Interval(int, 1, 100_000))
        suggest_batch = raw.get(BATCH_KEY, 4)
        validate(f"search.{BATCH_KEY}", suggest_batch, Interval(int, 1, 10_000))
        if BATCH_KEY in raw and algorithm not in ADAPTIVE_SEARCHERS:
            fail(f"search.{BATCH_KEY}", f"set only with an adaptive search.algorithm ({', '.join(ADAPTIVE_SEARCHERS)})",
                 suggest_batch)
        configs = cls._configs(raw[CONFIGS_KEY], raw) if CONFIGS_KEY in raw else ()
        axes, distributions = [], []
        for key in SEARCH_KEYS:
            if key not in raw:
                continue
            if isinstance(raw[key], dict) and key != MODEL_ARGS_KEY:
                distributions.append((key, *_distribution(key, raw[key])))
                continue
            values = raw[key] if isinstance(raw[key], list) else [raw[key]]
            if key == MODEL_ARGS_KEY:  # a mapping is one value here (a list of them, a grid axis)
                values = [_args(v) for v in values]
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
            fail(f"search.{SAMPLES_KEY}", f"set only with search.algorithm: {' or '.join(SEARCH_ALGORITHMS[1:])} (for seeds "
                 "use `repeats`)", num_samples)
        if algorithm != "grid" and not distributions:
            raise ConfigError(f"search.algorithm '{algorithm}' needs at least one search key given as a distribution, "
                              "e.g. `lr: {loguniform: [1e-4, 3e-3]}`.")
        return cls(tuple(axes), configs, tuple(distributions), num_samples, algorithm, suggest_batch)

    @staticmethod
    def _configs(listed: Any, raw: dict) -> tuple:
        allowed = tuple(k for k in SEARCH_KEYS if k not in raw and k not in ("seed", "fold"))
        ok = isinstance(listed, list) and listed and all(
            isinstance(c, dict) and c and set(c) <= set(allowed)
            and not any(isinstance(v, list) or (isinstance(v, dict) and k != MODEL_ARGS_KEY) for k, v in c.items())
            for c in listed
        )
        if not ok:
            fail(f"search.{CONFIGS_KEY}", f"a non-empty list of mappings of the keys {', '.join(allowed)}", listed)
        configs = [tuple(sorted((k, _args(v) if k == MODEL_ARGS_KEY else v) for k, v in c.items())) for c in listed]
        if len(set(configs)) < len(configs):
            fail(f"search.{CONFIGS_KEY}", "a list without repeated configs (each would be the same trial)", listed)
        return tuple(configs)

    def samples(self, seed: int) -> list[dict]:
        """The random draws: num_samples distinct {key: value} (one empty draw for a grid)."""
        if self.adaptive:
            raise ConfigError(f"An adaptive search ({self.algorithm}) chooses its configs while it runs: they are in its "
                              "experiment folder (ecg_ray_experiment.json), not in its experiment file.")
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


def optuna_distributions(space: SearchSpace, grid_axes: bool = False) -> dict:
    """search.KEY distributions as Optuna's (randint's high is exclusive, as in Ray Tune); with `grid_axes`,
    also every key given more than one value (grid axes, search.configs) as a categorical one."""
    import optuna

    d = optuna.distributions
    out = {}
    if grid_axes:
        drawn = {key for key, _, _ in space.distributions}
        for key in SEARCH_KEYS:
            values = list(dict.fromkeys(space.values(key)))
            if key not in drawn and len(values) > 1:
                out[key] = d.CategoricalDistribution(values)
    for key, name, args in space.distributions:
        if name == "choice":
            out[key] = d.CategoricalDistribution(list(args))
        elif name == "randint":
            out[key] = d.IntDistribution(args[0], args[1] - 1)
        elif name == "quniform":
            out[key] = d.FloatDistribution(args[0], args[0] + (args[1] - args[0]) // args[2] * args[2], step=args[2])
        else:
            out[key] = d.FloatDistribution(args[0], args[1], log=name == "loguniform")
    return out
