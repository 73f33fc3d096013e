"""Adaptive searchers by name: the seeded, batched, resumable Tune searcher that wraps any of them.

    search:
      algorithm: optuna          # a name of ecg_ray.config.constraints.ADAPTIVE_SEARCHERS
      num_samples: 16
      suggest_batch: 4

A searcher that learns from results is reproducible only if what it has learnt when it suggests
does not depend on timing. So suggestions come in batches of `search.suggest_batch` configs: the
first batch from the seed alone, each next one once every trial of the batches before has ended,
from exactly their results. A batch is what the searcher's module returns from
`suggest_batch(space, seed, batch, n, history)`: a pure function of the seed, the batch number and
the results so far (history: every earlier draw with its mean best val macro-F1, None where it
failed), whichever order trials end in and however many run at once. A resume rebuilds the
searcher the same way from the experiment folder (JSON: the configs suggested, the trials'
statuses and best values); nothing is unpickled.

Each suggestion runs once per combo (listed grid values and seeds, `repeats`, folds), and the
searcher is told the mean of their best val macro-F1 (a trial that failed counts as failed).
Trials ASHA stopped count with the best value they reached, as Ray's own searchers count them.

A second searcher is one module with `suggest_batch` (and optionally `require()`) plus its name in
ADAPTIVE_SEARCHERS; ecg_ray.tuning.optuna_search is the one shipped.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

import ray.tune.search

from ecg_ray.config import SearchSpace, TrialConfig
from ecg_ray.config.constraints import ADAPTIVE_SEARCHERS
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.results.store.folder import ExperimentDir
from ecg_ray.schema import RANK_METRIC, RANK_MODE, TRIAL_KEY


def searcher_module(name: str) -> ModuleType:
    """The module of the adaptive searcher `name`, checked to be usable here (its `require()`)."""
    if name not in ADAPTIVE_SEARCHERS:
        raise ConfigError(f"search.algorithm {name!r} is not an adaptive searcher; those are: {', '.join(ADAPTIVE_SEARCHERS)}.")
    module = importlib.import_module(ADAPTIVE_SEARCHERS[name])
    if not callable(getattr(module, "suggest_batch", None)):
        raise ConfigError(f"search.algorithm {name!r}: its module {module.__name__} has no suggest_batch(space, seed, "
                          "batch, n, history).")
    if callable(getattr(module, "require", None)):
        module.require()
    return module


class BatchedSearcher(ray.tune.search.Searcher):
    """Ray Tune's searcher for an adaptive `search.algorithm` (see the module's docstring).

    Args:
        space, seed: the experiment's search space and seed.
        exp: the experiment folder; each batch's trials are recorded there before any of them starts.
        recorded: trial key -> TrialConfig of every trial suggested so far (on a resume).
        values: trial key -> best val macro-F1 of each trial that has ended (None: it failed).
        rerun: recorded keys to run first: the trials a resume continues.
    """

    def __init__(self, space: SearchSpace, seed: int, exp: ExperimentDir, recorded: dict[str, TrialConfig] | None = None,
                 values: dict[str, float | None] | None = None, rerun: list[str] | None = None):
        super().__init__(metric=RANK_METRIC, mode=RANK_MODE)
        self.name = space.algorithm
        self.suggest_batch = searcher_module(self.name).suggest_batch
        self.space, self.seed, self.exp = space, seed, exp
        self.per_draw = len(space.combos(seed))
        self.trials = dict(recorded or {})
        self.values = dict(values or {})
        self.queue = list(rerun or [])
        self.best: dict[str, float] = {}
        self.running: dict[str, str] = {}  # Tune's trial id -> trial key

    def history(self) -> list[tuple[dict, float | None]]:
        """Each draw so far with the mean best value over its combos (None when none of them has one)."""
        keys = list(self.trials)
        out = []
        for start in range(0, len(keys), self.per_draw):
            group = keys[start:start + self.per_draw]
            trial = self.trials[group[0]]
            draw = {key: getattr(trial, key) for key, _, _ in self.space.distributions}
            got = [self.values[k] for k in group if self.values.get(k) is not None]
            out.append((draw, sum(got) / len(got) if got else None))
        return out

    def _next_batch(self) -> bool:
        drawn = len(self.trials) // self.per_draw
        batch = drawn // self.space.suggest_batch
        n = min(self.space.suggest_batch, self.space.num_samples - drawn)
        draws = self.suggest_batch(self.space, self.seed, batch, n, self.history())
        if not draws:
            return False
        new = self.space.trials(self.seed, draws, first=len(self.trials))
        self.trials.update(new)
        self.queue.extend(new)
        self.exp.record_trials(self.trials)
        described = "; ".join(", ".join(f"{k}={v}" for k, v in d.items()) for d in draws)
        print(f"[ecg-ray] {self.name} batch {batch}: {len(draws)} config(s) x {self.per_draw} -> "
              f"{', '.join(new)}: {described}", flush=True)
        return True

    def suggest(self, trial_id: str):
        if not self.queue:
            if len(self.trials) >= self.space.num_samples * self.per_draw:
                return ray.tune.search.Searcher.FINISHED
            if any(k not in self.values for k in self.trials):
                return None  # this batch is still running: the next one learns from all of it
            if not self._next_batch():
                print(f"[ecg-ray] {self.name}: the search space has no more distinct configs", flush=True)
                return ray.tune.search.Searcher.FINISHED
        key = self.queue.pop(0)
        self.running[trial_id] = key
        return {TRIAL_KEY: key, **dataclasses.asdict(self.trials[key])}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._saw(self.running.get(trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.running.pop(trial_id, None)
        if key is None:
            raise EcgRayError(f"{self.name} search: Tune ended trial {trial_id}, which this searcher never suggested.")
        self._saw(key, result)
        self.values[key] = None if error else self.best.get(key)

    def _saw(self, key: str | None, result: dict | None) -> None:
        value = (result or {}).get(RANK_METRIC)
        if key is not None and value is not None:
            self.best[key] = max(self.best.get(key, value), value)
