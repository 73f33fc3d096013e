"""Trial schedulers, one registry (names declared in ecg_ray.config.SCHEDULER_NAMES); ASHA per trial
(Ray Tune's own) or per config (grouped: ecg_ray.results.analysis.rungs) by scheduler.group.

Ray is imported only when a scheduler is built. The metric and mode they act
on are ecg_ray.schema.RANK_METRIC / RANK_MODE, given to Tune's TuneConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


def build_scheduler(cfg, max_epochs: int, groups: "ConfigGroups | None" = None):
    """The Tune scheduler for a SchedulerConfig, or None for 'none'. With `groups` (scheduler.group
    resolved to config: ExperimentConfig.groups_trials), ASHA stops a config's trials together."""
    if cfg.name == "asha" and groups is not None:
        return _grouped_asha(cfg, max_epochs, groups)
    return SCHEDULERS[cfg.name](cfg, max_epochs)


@dataclass
class ConfigGroups:
    """What grouped ASHA knows before the run: every trial so far (key -> Tune config dict), how many
    trials each config has (seeds x folds), and the scores a resumed experiment's trials reported
    before (key -> {epoch: val macro-F1}) and which of them failed."""

    trials: dict[str, dict]
    size: int
    scores: dict[str, dict[int, float]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)


def _grouped_asha(cfg, max_epochs: int, groups: ConfigGroups):
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from ecg_ray.results.analysis.rungs import group_of, key_order, plan, rung_epochs
    from ecg_ray.schema import RANK_METRIC, TRIAL_KEY

    class GroupedASHA(FIFOScheduler):
        """ASHA over configs (ecg_ray.results.analysis.rungs): a config's trials continue or stop together, by
        their mean at each rung, in an order that does not depend on when results arrive."""

        def __init__(self):
            super().__init__()
            self.rungs = rung_epochs(min(cfg.grace_period, max_epochs), cfg.reduction_factor, max_epochs)
            self.trials: dict[str, dict] = dict(groups.trials)
            self.scores = {k: dict(v) for k, v in groups.scores.items()}
            self.failed = set(groups.failed)

        def _plan(self) -> dict[str, int]:
            members: dict[str, list[str]] = {}
            epochs: dict[str, int] = {}
            for key in sorted(self.trials, key=key_order):
                group = group_of(self.trials[key])
                members.setdefault(group, []).append(key)
                epochs[group] = int(self.trials[key].get("epochs", max_epochs))
            return plan(list(members), members, self.scores, self.rungs, cfg.reduction_factor, self.failed,
                        groups.size, epochs)

        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            self.trials[trial.config[TRIAL_KEY]] = dict(trial.config)

        def on_trial_result(self, tune_controller, trial, result):
            key, epoch, value = trial.config[TRIAL_KEY], result.get("epoch"), result.get(RANK_METRIC)
            if epoch is None or value is None:
                return TrialScheduler.CONTINUE
            self.failed.discard(key)  # a retried trial that reports again counts again
            if int(epoch) in self.rungs:
                self.scores.setdefault(key, {})[int(epoch)] = float(value)
            stop_at = self._plan().get(group_of(trial.config))
            return TrialScheduler.STOP if stop_at is not None and int(epoch) >= stop_at else TrialScheduler.CONTINUE

        def on_trial_error(self, tune_controller, trial):
            super().on_trial_error(tune_controller, trial)
            self.failed.add(trial.config[TRIAL_KEY])

        def debug_string(self) -> str:
            return f"GroupedASHA: rungs {self.rungs}, {len(self._plan())} config(s) stopped"

    return GroupedASHA()
