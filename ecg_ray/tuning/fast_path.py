"""Which way a trial runs on Ray: the fast path (Ray Train's internals) or Ray's public API.

    ecg-ray tune experiments/quick.yaml   # "[ecg-ray] trials on the fast path (Ray 2.60.0, tested)"

resources.fast_path decides: `false` is the public path; `true` is the fast path, refused on a Ray
this project has not tested it with; `auto` (the default) is the fast path on a tested Ray whose
private names are all where the fast path expects them, else the public path. The choice is made
here from the installed Ray's version first: ecg_ray.tuning._ray_internals is imported only on a
tested Ray, and an ImportError there means the public path (or, under `true`, a clear error),
never a traceback.

To support a new Ray release: run `python -m pytest tests/test_fast_path.py` against it; where a
name is reported missing, adapt _ray_internals (and its PRIVATE_NAMES); then add the release to TESTED_RAY
once the whole suite passes on it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import ray

from ecg_ray.errors import ConfigError

TESTED_RAY = ("2.60.0",)  # the releases the fast path was tested with, the whole suite on each

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


def internals():
    """ecg_ray.tuning._ray_internals on a tested Ray whose private names it finds, else None.

    Besides the fast path it holds Ray's private settings that both paths use where they are
    trusted (Train's environment knobs, its autoscaling actor, a placement-group stats field): a
    private name is used only on a release it was tested with, and elsewhere Ray's defaults hold.
    """
    return _load()[0]


def _load():
    """(the internals module, None) on a tested Ray where it imports; (None, why not) elsewhere."""
    version = ray.__version__
    if version not in TESTED_RAY:
        return None, f"the fast path is tested on Ray {', '.join(TESTED_RAY)}, not {version}"
    try:
        return importlib.import_module("ecg_ray.tuning._ray_internals"), None
    except ImportError as err:  # a private name moved
        return None, f"this Ray {version} lacks a private name the fast path uses ({err})"
