"""Extending a finished study: which edits of an experiment file keep its trials comparable.

    ecg-ray tune experiments/seed_grid.yaml --extend ~/ecg_ray_results/seed_grid   # more seeds, configs, draws

An edited file may add seeds (`repeats`, `search.seed`), grid points or listed configs,
random draws or a longer Optuna budget (`search.num_samples`). Every trial the folder
holds must still be one of the edited file's, unchanged, so that its results stand beside
the new ones as if all had run together; it keeps its key and is not run again. An edit
that would make them incomparable is refused, naming the key: the data and its split
(`data.*`, `seed`), the folds, the early stopping rules (`scheduler.*`), and any trial
knob of an existing config (`search.epochs`, ...). Pure config logic: the driver
(ecg_ray.tuning.driver) checks the data hash and the split ids once the data is read.
"""

from __future__ import annotations

from dataclasses import asdict, fields

from ecg_ray.config.experiment import ExperimentConfig
from ecg_ray.config.search import SAMPLES_KEY
from ecg_ray.config.sections import DataConfig, TrialConfig
from ecg_ray.errors import ConfigError

# Where the data lives and whether a pickle may be loaded do not change what the trials saw:
# the data hash and the split's record ids, checked once the data is read, do.
DATA_KEYS = tuple(f.name for f in fields(DataConfig) if f.name not in ("path", "val_path", "test_path", "cache_dir",
                                                                        "trust_pickle"))


def _changed(section: str, old: dict, new: dict, keys) -> list[str]:
    return [f"{section}{k}: {old.get(k)!r} in the folder, {new.get(k)!r} in the file" for k in keys if old.get(k) != new.get(k)]


def _refuse(where: str, changes: list[str], why: str) -> None:
    raise ConfigError(f"Cannot extend {where}: {'; '.join(changes)}. {why} Keep the folder's value"
                      f"{'s' if len(changes) > 1 else ''}, or run the edited file as a new experiment (another --name).")


def check_settings(old: ExperimentConfig, new: ExperimentConfig, where: str) -> None:
    """The data, the split, the folds and the early stopping rules are the folder's."""
    changes = _changed("data.", asdict(old.data), asdict(new.data), DATA_KEYS) + _changed("", asdict(old), asdict(new), ["seed"])
    if changes:
        _refuse(where, changes, "The trials it holds were trained and validated on that data and split.")
    changes = _changed("scheduler.", asdict(old.scheduler), asdict(new.scheduler), [f.name for f in fields(old.scheduler)])
    if changes:
        _refuse(where, changes, "Its trials were stopped early (or not) by those rules.")
    if old.search_space.adaptive or new.search_space.adaptive:
        keep = {k: v for k, v in old.search.items() if k != SAMPLES_KEY}
        edited = {k: v for k, v in new.search.items() if k != SAMPLES_KEY}
        changes = _changed("search.", keep, edited, sorted(set(keep) | set(edited)))
        changes += _changed("", asdict(old), asdict(new), ["repeats"])
        if changes:
            _refuse(where, changes, "An Optuna study is extended by its budget only (search.num_samples): its sampler "
                                    "was told the old trials' results in that space.")
        if new.n_trials < old.n_trials:
            _refuse(where, [f"search.num_samples: {old.n_trials} trials in the folder, {new.n_trials} in the file"],
                    "An extension only adds trials.")


def keyed_trials(old: dict[str, TrialConfig], new: list[TrialConfig], where: str) -> dict[str, TrialConfig]:
    """The edited file's trials under their keys: a trial the folder holds keeps its key, a new one
    takes the next free key, in the file's order. Every trial of `old` must be among `new`."""
    keys, present = {trial: key for key, trial in old.items()}, set(new)
    missing = [(key, trial) for key, trial in old.items() if trial not in present]
    if missing:
        key, trial = missing[0]
        _refuse(where, [f"its trial {key} ({_describe(trial)}) is not among the file's trials{_nearest(trial, new)}"] +
                ([f"and {len(missing) - 1} more"] if len(missing) > 1 else []),
                "An extension keeps every trial the folder holds and only adds new ones.")
    out, following = {}, max((int(k[1:]) for k in old if k[1:].isdigit()), default=-1) + 1
    for trial in new:
        if trial in keys:
            out[keys[trial]] = trial
        else:
            out[f"t{following:04d}"] = trial
            following += 1
    return out


def _describe(trial: TrialConfig) -> str:
    default = asdict(TrialConfig())
    return " ".join(f"{k}={v}" for k, v in asdict(trial).items() if v != default[k] or k in ("lr", "seed")) or "defaults"


def _nearest(trial: TrialConfig, new: list[TrialConfig]) -> str:
    """Where the file's nearest trial differs from `trial`: the knob the edit changed (search.epochs, ...)."""
    if not new:
        return ""
    mine = asdict(trial)
    closest = min((asdict(t) for t in new), key=lambda t: sum(t[k] != v for k, v in mine.items()))
    diff = [f"search.{k}: {v!r} in the folder, {closest[k]!r} in the file" for k, v in mine.items() if closest[k] != v]
    return f"; the nearest differs in {', '.join(diff)}" if diff else ""


__all__ = ["DATA_KEYS", "check_settings", "keyed_trials"]
