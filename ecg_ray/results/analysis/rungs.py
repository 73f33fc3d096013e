"""Grouped ASHA's decisions as a pure function of the trials' scores: which configs stop at which rung.

    python -c "from ecg_ray.results.analysis.rungs import rung_epochs; print(rung_epochs(1, 2, 20))"   # [1, 2, 4, 8, 16]

With seeds or folds a config is several trials, and stock ASHA, stopping trials one by one,
keeps a config's lucky seeds and drops its unlucky ones: its mean is biased upwards. Grouped
ASHA (`scheduler.group: config`) decides per config instead: at each rung (epoch grace_period x
reduction_factor^k below the last epoch), once every trial of a config has reported that epoch,
the config's mean is compared with the means of the configs before it, and the config stops,
every trial of it, when its mean is below their (1 - 1/reduction_factor) quantile: ASHA's own
rule (Ray Tune's `_Bracket.on_result`), applied to config means.

"Before it" is the configs' order in the experiment (their first trial key), not the order
results arrive in: a config is decided at a rung only once every config before it that reached
the rung has its mean there. So the decisions are those of a run that took the configs one
after another, whatever the concurrency and however trials interleave: the same scores give
the same stops. A trial whose config waits keeps training; if the decision is to stop, the
report counts its epochs up to the rung only (what the decision saw), so the tables are the
same too. The scheduler (ecg_ray.tuning.schedulers) and the report both call `plan`.
"""

from __future__ import annotations

import json

import numpy as np

REPLICATES = ("seed", "fold", "trial_key")  # what makes trials of one config differ


def rung_epochs(grace_period: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """The epochs at which configs are compared: grace_period x rf^k, below max_epochs."""
    out, epoch = [], grace_period
    while epoch < max_epochs:
        out.append(epoch)
        epoch *= reduction_factor
    return out


def key_order(key: str) -> tuple:
    """Trial keys in the order they were made: t0000 ... t9999, t10000, ..."""
    return len(key), key


def group_of(config: dict) -> str:
    """A trial's config without its seed and fold: the same string for every trial of a config."""
    return json.dumps({k: v for k, v in sorted(config.items()) if k not in REPLICATES}, sort_keys=True, default=str)


def plan(order: list[str], members: dict[str, list[str]], scores: dict[str, dict[int, float]], rungs: list[int],
         reduction_factor: int, failed: set[str] = frozenset(), size: int = 0,
         epochs: dict[str, int] | None = None) -> dict[str, int]:
    """group -> the rung epoch it stops at, for every group decided to stop so far.

    Args:
        order: the groups in the experiment's order.
        members: group -> its trial keys (every one it will have).
        scores: trial key -> {epoch: score} reported so far.
        rungs: rung_epochs(...).
        reduction_factor: ASHA's.
        failed: trials that ended with an error: left out of their config's mean.
        size: the trials every config has (seeds x folds); a config with fewer known is undecided.
        epochs: group -> its trials' epochs; a config never reaches a rung at or past them.
    """
    stopped: dict[str, int] = {}
    for rung in rungs:
        seen: list[float] = []  # the means at this rung of the configs before, in order
        for group in order:
            if group in stopped:
                continue  # stopped at an earlier rung: it never reached this one
            if epochs and rung >= epochs.get(group, rung + 1):
                continue  # its trials end before this rung
            known = members.get(group, [])
            if len(known) < size:
                break  # not every trial of it exists yet (an Optuna batch being made)
            alive = [t for t in known if t not in failed]
            if not alive:
                continue
            values = [scores.get(t, {}).get(rung) for t in alive]
            if any(v is None for v in values):
                break  # undecided: no config after it can be decided at this rung yet
            mean = float(np.mean(values))
            if seen and mean < float(np.nanpercentile(seen, (1 - 1 / reduction_factor) * 100)):
                stopped[group] = rung
            seen.append(mean)
    return stopped
