"""Which way a trial runs on Ray: the fast path (Ray Train's internals) or Ray's public API.

    ecg-ray tune experiments/quick.yaml   # "[ecg-ray] trials on the fast path (Ray X.Y.Z, tested)"

resources.fast_path decides: `false` is the public path; `true` is the fast path, refused on a Ray
this project has not tested it with; `auto` (the default) is the fast path on a tested Ray whose
private names are all where the fast path expects them, else the public path. The choice is made
here from the installed Ray's version first: ecg_ray.tuning._ray_internals is imported only on a
tested Ray, and an ImportError there means the public path (or, under `true`, a clear error),
never a traceback. This module is the only way to the internals: each of Ray's private settings
below says what holds without it, and the fast path's parts are asked for only once it is chosen.

To support a new Ray release: run `python -m pytest tests/test_fast_path.py` against it; where a
name is reported missing, adapt _ray_internals (and its PRIVATE_NAMES); then add the release to TESTED_RAY
once the whole suite passes on it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import ray

from ecg_ray.errors import ConfigError
from ecg_ray.releases import TESTED_RAY  # the releases the fast path was tested with, defined once there


@dataclass(frozen=True)
class TrialPath:
    """The way this experiment's trials run, and the line that says why."""

    fast: bool
    why: str


def choose(setting: str | bool) -> TrialPath:
    """resources.fast_path ('auto', True or False) on the installed Ray -> the path its trials take.

    On a tested Ray the fast path's module is imported here, once: a Ray that lacks one of its names
    (a patched build, say) then takes the public path under 'auto', and is refused under `true`.
    """
    version = ray.__version__
    if setting is False:
        return TrialPath(False, f"trials on Ray's public API (Ray {version}; resources.fast_path: false)")
    problem = _load()[1]
    if problem is None:
        return TrialPath(True, f"trials on the fast path (Ray {version}, tested)")
    if setting is True:
        raise ConfigError(
            f"resources.fast_path is true, but {problem}. Set resources.fast_path to auto (the fast path where it is "
            f"tested, Ray's public API elsewhere) or false, or install ray=={TESTED_RAY[-1]}."
        )
    return TrialPath(False, f"trials on Ray's public API ({problem}; resources.fast_path: auto)")


def trusted() -> bool:
    """Whether this Ray is a tested release whose private names are all where they are expected: only
    then are Ray's private settings used, by either path; elsewhere Ray's defaults hold."""
    return _load()[0] is not None


# Ray's private settings that both paths use where they are trusted (ecg_ray.tuning._ray_internals),
# each with what holds on an untested Ray. This module is the only one that reaches the internals.

def train_env(worker_start_timeout_s: float, local: bool) -> dict:
    """Train's environment knobs for a trial's run (its wait for a worker, poll, metrics, preemption
    watcher); {} on an untested Ray."""
    internals = _load()[0]
    return internals.train_env(worker_start_timeout_s, local) if internals else {}


def worker_quiet_env() -> dict:
    """Train's switch for its print() patch in the worker; {} on an untested Ray."""
    internals = _load()[0]
    return dict(internals.WORKER_QUIET_ENV) if internals else {}


def placement_group_wait_s() -> float:
    """Seconds this worker's placement group waited to be placed, from Ray's stats; 0.0 on an untested Ray."""
    internals = _load()[0]
    return internals.placement_group_wait_s() if internals else 0.0


def release_autoscaling_coordinator() -> None:
    """End Train's autoscaling coordinator and its standing request; on an untested Ray the
    autoscaler waits for Ray to let them go."""
    internals = _load()[0]
    if internals is not None:
        internals.release_autoscaling_coordinator()


# The fast path's own parts, called only once choose() has taken it.

def start_local_ray(num_cpus: int) -> None:
    """A fresh local Ray without the head's cluster services (_ray_internals.start_local_ray)."""
    _fast().start_local_ray(num_cpus)


def prestart_train_services() -> None:
    """Start Ray Train's cluster-wide services once, before the trials (_ray_internals.prestart_train_services)."""
    _fast().prestart_train_services()


def placement_group_release():
    """The function that frees a trial's placement group when it ends (_ray_internals.release_placement_group)."""
    return _fast().release_placement_group


def trial_trainer(train_loop, autoscaler: bool, reuse_worker: bool, run_config_for, **run):
    """A one-worker Train run whose controller runs in the trial's Tune actor (_ray_internals.TrialTrainer);
    `run_config_for(callbacks)` builds its RunConfig around the callback that reports to Tune."""
    internals = _fast()
    return internals.TrialTrainer(train_loop, autoscaler=autoscaler, reuse_worker=reuse_worker,
                                  run_config=run_config_for([internals.TuneReport()]), **run)


def _fast():
    """The internals module where the fast path was chosen (choose() has imported it)."""
    internals, problem = _load()
    if internals is None:
        raise RuntimeError(f"the fast path's parts were asked for, but {problem}")
    return internals


def _load():
    """(the internals module, None) on a tested Ray where it imports; (None, why not) elsewhere."""
    version = ray.__version__
    if version not in TESTED_RAY:
        return None, f"the fast path is tested on Ray {', '.join(TESTED_RAY)}, not {version}"
    try:
        return importlib.import_module("ecg_ray.tuning._ray_internals"), None
    except ImportError as err:  # a private name moved
        return None, f"this Ray {version} lacks a private name the fast path uses ({err})"
