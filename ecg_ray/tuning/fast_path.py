"""Which way a trial runs on Ray: the fast path (Ray Train's internals) or Ray's public API.

    ecg-ray tune experiments/quick.yaml   # "[ecg-ray] trials on the fast path (Ray 2.60.0, tested)"

resources.fast_path decides: `false` is the public path; `true` is the fast path, refused on a Ray
this project has not tested it with; `auto` (the default) is the fast path on a tested Ray whose
private names are all where the fast path expects them, else the public path. The choice is made
here from the installed Ray's version first: ecg_ray.tuning._ray_internals is imported only on a
tested Ray, and an ImportError there means the public path (or, under `true`, a clear error),
never a traceback.

To support a new Ray release: run `python -m pytest tests/test_fast_path.py` against it; where a
name is reported missing, adapt _ray_internals and PRIVATE_NAMES; then add the release to TESTED_RAY
once the whole suite passes on it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import ray

from ecg_ray.errors import ConfigError

TESTED_RAY = ("2.60.0",)  # the releases the fast path was tested with, the whole suite on each

_TRAIN = "ray.train.v2._internal.execution"
# Every private name of Ray that ecg_ray.tuning._ray_internals uses: module -> names in it (a dotted
# name is an attribute of a class: "WorkerGroup._clear_state"). Data, not imports: tests/test_fast_path.py
# looks each one up in the installed Ray and checks that the module imports nothing private unlisted.
PRIVATE_NAMES = {
    "ray._private.node": ("Node", "Node.start_monitor", "Node.start_api_server"),
    "ray._private.state": ("actors",),
    "ray._raylet": ("PlacementGroupID", "PlacementGroupID.from_hex"),
    "ray.experimental.internal_kv": ("_internal_kv_put", "_internal_kv_get", "_internal_kv_del", "_internal_kv_list"),
    "ray.train.v2._internal.callbacks.datasets": ("DatasetsCallback",),
    "ray.train.v2._internal.callbacks.placement_group_callback": ("PlacementGroupCleanerCallback",),
    f"{_TRAIN}.callback": ("WorkerGroupCallback", "WorkerGroupCallback.after_worker_group_start",
                           "WorkerGroupCallback.after_worker_group_shutdown", "WorkerGroupCallback.after_worker_group_abort"),
    f"{_TRAIN}.controller": ("TrainController", "TrainController.run", "TrainController.get_result",
                             "TrainController.worker_group_cls"),
    f"{_TRAIN}.scaling_policy.scaling_policy": ("TrainAutoscalingCoordinatorClient",),
    f"{_TRAIN}.worker_group.state": ("_shutdown_sync_actor",),
    f"{_TRAIN}.worker_group.worker_group": (
        "SynchronizationActor", "WorkerGroup", "WorkerGroup._create_placement_group", "WorkerGroup._create_workers",
        "WorkerGroup._assign_worker_ranks", "WorkerGroup._clear_state", "WorkerGroup.shutdown", "WorkerGroup.abort",
        "WorkerGroup.has_started", "WorkerGroup.get_latest_poll_status", "WorkerGroup.get_workers",
        "WorkerGroup.get_worker_group_state",
    ),
    f"{_TRAIN}.worker_group.placement_group_handle": ("DefaultPlacementGroupHandle", "DefaultPlacementGroupHandle.wait",
                                                      "DefaultPlacementGroupHandle.shutdown"),
    f"{_TRAIN}.worker_group.worker": ("Worker", "Worker.execute_async"),
    "ray.train.v2._internal.util": ("invoke_context_managers",),
    "ray.train.v2.api.callback": ("UserCallback", "UserCallback.after_report"),
    "ray.train.v2.api.data_parallel_trainer": ("DataParallelTrainer._create_default_callbacks",
                                                "DataParallelTrainer._initialize_and_run_controller"),
    "ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator": ("get_or_create_autoscaling_coordinator",),
}


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
    problem = None
    if version not in TESTED_RAY:
        problem = f"the fast path is tested on Ray {', '.join(TESTED_RAY)}, not {version}"
    else:
        try:
            importlib.import_module("ecg_ray.tuning._ray_internals")
        except ImportError as err:  # a private name moved
            problem = f"this Ray {version} lacks a private name the fast path uses ({err})"
    if problem is None:
        return TrialPath(True, f"trials on the fast path (Ray {version}, tested)")
    if setting is True:
        raise ConfigError(
            f"resources.fast_path is true, but {problem}. Set resources.fast_path to auto (the fast path where it is "
            f"tested, Ray's public API elsewhere) or false, or install ray=={TESTED_RAY[-1]}."
        )
    return TrialPath(False, f"trials on Ray's public API ({problem}; resources.fast_path: auto)")
