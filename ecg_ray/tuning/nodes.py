"""Stop the Ray processes of one Ray instance on this host, and nothing else.

    ecg-ray stop-node --temp-dir /tmp/ecg_ray_cluster

`ray stop` ends every Ray process on the host that the user may signal: a lab box
shared by two clusters, or by a cluster and someone's local `ray.init()`, loses both.
A Ray instance started with `ray start --temp-dir=DIR` names DIR in the command line
of most of its processes; the rest (the dashboard and runtime-env agents, which
retitle themselves `ray::DashboardAgent`, the Ray Client server) name it only in
the log files they hold open under DIR, or in their RAY_TMPDIR. This stops exactly
those, and what they spawned: SIGTERM, a grace period, then SIGKILL.
cluster-onprem.yaml calls it before `ray start`.
"""

from __future__ import annotations

import os

import psutil


def _names(p: psutil.Process, root: str) -> bool:
    """Whether `p` names DIR: in its command line, its RAY_TMPDIR, or a file it holds open below DIR."""
    line = " ".join(p.info["cmdline"] or []) + " "
    # DIR as a whole argument value or a path below it (a bare prefix would also match DIR2).
    if f"{root}/" in line or f"{root} " in line:
        return True
    if ((p.info.get("environ") or {}).get("RAY_TMPDIR") or "").rstrip("/") == root:
        return True
    try:
        return any(f.path.startswith(f"{root}/") for f in p.open_files())
    except psutil.AccessDenied:  # another user's process: not ours to stop anyway
        return False


def processes(temp_dir: str) -> list[psutil.Process]:
    """The live processes of the Ray instance whose temp dir is `temp_dir`, with their descendants."""
    root = os.path.abspath(os.path.expanduser(temp_dir)).rstrip("/")
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}  # the shell that runs us names DIR too
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if p.pid not in spared and p.pid not in found and _names(p, root):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True) if c.pid not in spared)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return list(found.values())


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
    return len(procs) + kill(temp_dir)


def kill(temp_dir: str, passes: int = 3) -> int:
    """SIGKILL the instance's processes at once, as a lost machine would vanish. Returns how many there were.

    Later passes catch what was started while the first was being killed (a worker a
    raylet spawned, an agent a dying raylet had just forked).
    """
    killed = 0
    for _ in range(passes):
        procs = processes(temp_dir)
        if not procs:
            break
        _kill(procs)
        psutil.wait_procs(procs, timeout=10)
        killed += len(procs)
    return killed
