"""Trial schedulers, one registry (names declared in ecg_ray.config.SCHEDULER_NAMES).

Ray is imported only when a scheduler is built. The metric and mode they act
on are ecg_ray.schema.RANK_METRIC / RANK_MODE, given to Tune's TuneConfig.
"""

from __future__ import annotations


def _asha(cfg, max_epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    # metric/mode come from TuneConfig (Tune refuses them in both places).
    # time_attr=epoch, not training_iteration: the iteration counter restarts at 1 after a
    # retry or a restore, the epoch we report does not.
    return ASHAScheduler(
        time_attr="epoch",
        max_t=max_epochs,
        grace_period=min(cfg.grace_period, max_epochs),
        reduction_factor=cfg.reduction_factor,
        brackets=1,  # more brackets draw from NumPy's global RNG
    )


SCHEDULERS = {
    "asha": _asha,
    "none": lambda cfg, max_epochs: None,
}


def build_scheduler(cfg, max_epochs: int):
    """The Tune scheduler for a SchedulerConfig, or None for 'none'."""
    return SCHEDULERS[cfg.name](cfg, max_epochs)
