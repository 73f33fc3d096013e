"""Ray for one run: join a cluster, or start a local Ray on loopback (and stop it in the background
once the run needs it no more).

    ecg-ray tune experiments/quick.yaml      # a local Ray; --address auto joins a running one
"""

from __future__ import annotations

import os
import socket
import threading
import time

import ray

from ecg_ray.errors import EcgRayError
from ecg_ray.tuning import fast_path
from ecg_ray.tuning.progress import _report_imports
from ecg_ray.tuning.trial import QUIET_ENV

RAY_START_ATTEMPTS = 3

_ray_stopping: list[threading.Thread] = []  # a shutdown of the local Ray still running (at most one)

def _stop_ray_in_background() -> None:
    """Shut the local Ray down in a thread (0.1-0.4 s on 2 cores), overlapping what the command does
    next; Python joins the thread before it exits, and init_ray before it starts Ray again. It first
    waits for the report's imports: a torch import still running while Ray shut down ended the
    process (Ray's core worker: "already been shutdown ... The process will exit"), once in three runs."""

    def stop():
        while _report_imports:
            _report_imports.pop().join()
        ray.shutdown()

    thread = threading.Thread(target=stop, name="ray-shutdown")
    thread.start()
    _ray_stopping.append(thread)


def _wait_for_ray_to_stop() -> None:
    while _ray_stopping:
        _ray_stopping.pop().join()


def init_ray(address: str | None = None, num_cpus: int | None = None, fast: bool = False) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a fresh local Ray on loopback.

    `fast`: the trials take the fast path, so a local Ray starts without the services only Ray's
    public path needs (the dashboard, whose State API Train's placement-group cleaner asks whether a
    run's controller is alive; the autoscaler monitor; idle prestarted workers).

    A start that fails (a loaded machine: the dashboard or a node too slow to come up) is
    retried; if it keeps failing, one paragraph says why and what to do.
    """
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    _wait_for_ray_to_stop()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            if address:
                _check_reachable(address)
                ray.init(address=address, log_to_driver=True)
            else:
                # "local" starts a fresh instance even when a stale /tmp/ray/ray_current_cluster exists.
                # `ecg-ray tune` sets LOOPBACK_ENV before Ray is imported, so every process of this Ray
                # listens on loopback only; cluster nodes keep Ray's defaults (they must reach each
                # other). No dashboard: nothing here uses it (trials' placement groups are released by
                # the driver, not by Train's State-API cleaner), and it cost 0.8-1.8 s of the start on
                # 2 cores. To watch a local run in it, start Ray yourself and pass --address auto.
                if fast:
                    fast_path.start_local_ray(num_cpus or os.cpu_count())
                else:  # the dashboard's State API serves Train's placement-group cleaner; loopback only
                    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
                             dashboard_host="127.0.0.1")
            return
        except (OSError, RuntimeError) as err:  # ConnectionError and TimeoutError among them
            ray.shutdown()
            if attempt == RAY_START_ATTEMPTS:
                where = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
                fix = ("Check that the cluster is up (`ray status --address ...`) and that this machine can reach it."
                       if address else "The machine may be overloaded or short of memory, or Ray's ports taken: retry "
                       "when it is less busy, or start Ray yourself (`ray start --head`) and pass --address auto.")
                first_line = (str(err).strip().splitlines() or [""])[0][:300]
                raise EcgRayError(f"Could not {where} after {attempt} attempts ({type(err).__name__}: {first_line}). {fix}") from None
            print(f"[ecg-ray] Ray did not start ({type(err).__name__}); trying again ({attempt + 1}/{RAY_START_ATTEMPTS})", flush=True)
            time.sleep(2 * attempt)

def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a host:port cluster address does not answer.

    ray.init keeps retrying a GCS that is not there for many minutes; a TCP connect tells at once.
    """
    host, sep, port = address.rpartition(":")
    if not sep or address.startswith("ray://") or not port.isdigit():
        return  # 'auto', ray:// client addresses: Ray's own lookup answers quickly
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
        pass
