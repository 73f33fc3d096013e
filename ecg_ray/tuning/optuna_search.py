"""`search.algorithm: optuna`: Optuna's TPE through Ray Tune's OptunaSearch, one batch at a time.

The adaptive searcher shipped with ecg_ray, in the shape every one has (ecg_ray.tuning.searchers
batches, records and resumes it): `suggest_batch(space, seed, batch, n, history)`. Each batch is
suggested by a fresh OptunaSearch whose TPE sampler is seeded by (experiment seed, batch number)
and told the results so far (`add_evaluated_point`), so a batch is a pure function of the seed
and the results before it. Optuna is told a draw's mean best val macro-F1 over its combos.
"""

from __future__ import annotations

import logging
import warnings
import zlib

from ecg_ray.config import SearchSpace
from ecg_ray.config.search import optuna_distributions
from ecg_ray.errors import ConfigError
from ecg_ray.schema import RANK_METRIC, RANK_MODE

INSTALL_HINT = "it is a dependency of ecg_ray: reinstall it (pip install -e .), or pip install 'optuna>=3.0'"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"search.algorithm 'optuna' needs the Optuna package: {INSTALL_HINT}.") from None
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def require() -> None:
    """Optuna is installed (a ConfigError naming the fix where it is not)."""
    _optuna()


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
