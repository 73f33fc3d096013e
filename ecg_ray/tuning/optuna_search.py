"""`search.algorithm: optuna`: Optuna's TPE through Ray Tune's OptunaSearch, in reproducible batches.

A searcher that learns from results is reproducible only if what it has learnt when it suggests
does not depend on timing. So suggestions come in batches of `search.suggest_batch` configs: the
first batch from the seed alone, each next one once every trial of the batches before has ended,
from exactly their results. Each batch is suggested by a fresh OptunaSearch whose TPE sampler is
seeded by (experiment seed, batch number) and told the results so far (`add_evaluated_point`),
so a batch is a pure function of the seed and the results before it, whichever order trials end
in and however many run at once. A resume rebuilds the searcher the same way from the experiment
folder (JSON: the configs suggested, the trials' statuses and best values); nothing is unpickled.

Each suggestion runs once per combo (listed grid values and seeds, `repeats`), and Optuna is told
the mean of their best val macro-F1 (a trial that failed counts as failed). Trials ASHA stopped
count with the best value they reached, as Ray's own OptunaSearch counts them.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
import zlib

import ray.tune.search

from ecg_ray.config import SearchSpace, TrialConfig
from ecg_ray.config.search import optuna_distributions
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.results.folder import ExperimentDir
from ecg_ray.schema import RANK_METRIC, RANK_MODE, TRIAL_KEY

INSTALL_HINT = "it is a dependency of ecg_ray: reinstall it (pip install -e .), or pip install 'optuna>=3.0'"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"search.algorithm 'optuna' needs the Optuna package: {INSTALL_HINT}.") from None
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def _readable(value, dist):
    """A float suggestion to 6 significant digits (as random draws are), still inside its range."""
    if not hasattr(dist, "low") or not isinstance(value, float) or dist.step:
        return value  # a choice, an int, or a float on a quniform step
    return min(max(float(f"{value:.6g}"), dist.low), dist.high)


def batch_seed(seed: int, batch: int) -> int:
    return zlib.crc32(f"ecg_ray optuna {seed} {batch}".encode())


def suggest_batch(space: SearchSpace, seed: int, batch: int, n: int, history: list[tuple[dict, float | None]]) -> list[dict]:
    """The `n` configs (draws of the distribution keys) that TPE suggests for batch `batch`, told
    `history`: every earlier draw with its value (None: it failed). Never a draw of the history,
    never one that makes an invalid trial; fewer than `n` only when the space has no more."""
    from ray.tune.search.optuna import OptunaSearch

    optuna = _optuna()
    dists = optuna_distributions(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is "experimental" in some Optuna releases
        sampler = optuna.samplers.TPESampler(seed=batch_seed(seed, batch), constant_liar=True)
    searcher = OptunaSearch(space=dists, metric=RANK_METRIC, mode=RANK_MODE, sampler=sampler)
    for draw, value in history:
        searcher.add_evaluated_point(draw, value if value is not None else 0.0, error=value is None)
    seen = {tuple(sorted(draw.items())) for draw, _ in history}
    out = []
    for i in range(100 * n):
        suggested = searcher.suggest(f"b{batch}s{i}")
        draw = {key: _readable(suggested[key], dists[key]) for key in dists}
        try:
            space.grid(seed, [draw])  # every trial it makes is valid
        except ConfigError:
            searcher.on_trial_complete(f"b{batch}s{i}", error=True)  # e.g. warm-up longer than the epochs drawn
            continue
        signature = tuple(sorted(draw.items()))
        if signature in seen:
            continue  # stays "running" for TPE (constant liar), which steers it elsewhere
        seen.add(signature)
        out.append(draw)
        if len(out) == n:
            break
    return out


class BatchedOptuna(ray.tune.search.Searcher):
    """Ray Tune's searcher for `search.algorithm: optuna` (see the module's docstring).

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
        _optuna()
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
        draws = suggest_batch(self.space, self.seed, batch, n, self.history())
        if not draws:
            return False
        new = self.space.trials(self.seed, draws, first=len(self.trials))
        self.trials.update(new)
        self.queue.extend(new)
        self.exp.record_trials(self.trials)
        described = "; ".join(", ".join(f"{k}={v}" for k, v in d.items()) for d in draws)
        print(f"[ecg-ray] optuna batch {batch}: {len(draws)} config(s) x {self.per_draw} -> "
              f"{', '.join(new)}: {described}", flush=True)
        return True

    def suggest(self, trial_id: str):
        if not self.queue:
            if len(self.trials) >= self.space.num_samples * self.per_draw:
                return ray.tune.search.Searcher.FINISHED
            if any(k not in self.values for k in self.trials):
                return None  # this batch is still running: the next one learns from all of it
            if not self._next_batch():
                print("[ecg-ray] optuna: the search space has no more distinct configs", flush=True)
                return ray.tune.search.Searcher.FINISHED
        key = self.queue.pop(0)
        self.running[trial_id] = key
        return {TRIAL_KEY: key, **dataclasses.asdict(self.trials[key])}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._saw(self.running.get(trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.running.pop(trial_id, None)
        if key is None:
            raise EcgRayError(f"Optuna search: Tune ended trial {trial_id}, which this searcher never suggested.")
        self._saw(key, result)
        self.values[key] = None if error else self.best.get(key)

    def _saw(self, key: str | None, result: dict | None) -> None:
        value = (result or {}).get(RANK_METRIC)
        if key is not None and value is not None:
            self.best[key] = max(self.best.get(key, value), value)
