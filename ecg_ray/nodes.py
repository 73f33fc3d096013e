"""Stop the Ray processes of one Ray instance on this host, and nothing else.

    ecg-ray stop-node --temp-dir /tmp/ecg_ray_cluster

`ray stop` ends every Ray process on the host that the user may signal: a lab box
shared by two clusters, or by a cluster and someone's local `ray.init()`, loses both.
A Ray instance started with `ray start --temp-dir=DIR` names DIR in the command line
of its processes (or, for a few, in their RAY_TMPDIR); this stops exactly those:
SIGTERM, a grace period, then SIGKILL. cluster-onprem.yaml calls it before `ray start`.
"""

from __future__ import annotations

import os

import psutil


def processes(temp_dir: str) -> list[psutil.Process]:
    """The live processes of the Ray instance whose temp dir is `temp_dir`."""
    root = os.path.abspath(os.path.expanduser(temp_dir)).rstrip("/")
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}  # the shell that runs us names DIR too
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        if p.pid in spared:
            continue
        try:
            line = " ".join(p.info["cmdline"] or []) + " "
            tmpdir = ((p.info.get("environ") or {}).get("RAY_TMPDIR") or "").rstrip("/")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # DIR as a whole argument value or a path below it (a bare prefix would also match DIR2).
        if f"{root}/" in line or f"{root} " in line or tmpdir == root:
            found.append(p)
    return found


def _kill(procs: list[psutil.Process], term: bool = False) -> None:
    for p in procs:
        try:
            p.terminate() if term else p.kill()
        except psutil.NoSuchProcess:
            pass


def stop(temp_dir: str, grace_s: float = 10.0) -> int:
    """SIGTERM the instance's processes, SIGKILL what is left after `grace_s`. Returns how many there were."""
    procs = processes(temp_dir)
    _kill(procs, term=True)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    _kill(alive)
    psutil.wait_procs(alive, timeout=grace_s)
    # Later-started children (a worker spawned while we waited) are caught by a second pass.
    late = processes(temp_dir)
    _kill(late)
    return len(procs) + len(late)
