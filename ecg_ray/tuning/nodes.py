"""Stop the Ray processes of one Ray instance on this host, and nothing else.

    ecg-ray stop-node --temp-dir /tmp/ecg_ray_cluster

`ray stop` ends every Ray process on the host that the user may signal: a lab box
shared by two clusters, or by a cluster and someone's local `ray.init()`, loses both.
A Ray instance started with `ray start --temp-dir=DIR` keeps everything of its own in
DIR/session_*/ (sockets, logs, runtime resources). Most of its processes name a path
there in their command line; the rest (the dashboard and runtime-env agents, which
retitle themselves `ray::DashboardAgent`, the Ray Client server) hold a log file open
there. A process matches only by such a path, below one of DIR's session folders, so a
DIR of `/tmp` cannot match every process that mentions /tmp. DIR must look like a Ray
temp dir (a session_* folder in it) and must not be `/` or a home directory. This stops
the matched processes and what they spawned: SIGTERM, a grace period, then SIGKILL.
cluster-onprem.yaml calls it before `ray start`.
"""

from __future__ import annotations

import os
import pwd
import re

import psutil

from ecg_ray.errors import ConfigError

# The folders no Ray instance lives in directly; a typo there would otherwise match broadly.
_NEVER = ("/", "/var", "/usr", "/home", "/root", "/etc", "/opt", "/proc", "/dev", "/sys", "/run")


def _homes() -> set[str]:
    homes = {os.path.expanduser("~")}
    try:
        homes.update(entry.pw_dir for entry in pwd.getpwall() if entry.pw_dir)
    except OSError:
        pass
    return {os.path.realpath(h) for h in homes}


def _root(temp_dir: str) -> str:
    """DIR made absolute; ConfigError for `/`, a system folder or a home (no one Ray instance's temp dir)."""
    root = os.path.realpath(os.path.abspath(os.path.expanduser(temp_dir)))
    if root in _NEVER or root in _homes():
        raise ConfigError(f"stop-node --temp-dir {temp_dir}: refusing {root!r}, a system folder or a home, not one Ray "
                          f"instance's temp dir; {_FIX}")
    return root


_FIX = "give the --temp-dir that `ray start` was given (cluster-onprem.yaml uses /tmp/ecg_ray_cluster)"


def ray_temp_dir(temp_dir: str) -> str | None:
    """DIR made absolute and checked to be a Ray temp dir; None when DIR does not exist (no instance ever ran there).

    Raises ConfigError for `/`, a system folder, a home, a file, or a folder without a Ray session.
    """
    root = _root(temp_dir)
    if not os.path.exists(root):
        return None
    if not os.path.isdir(root):
        raise ConfigError(f"stop-node --temp-dir {temp_dir}: {root} is a file, not a Ray temp dir; {_FIX}")
    if not any(name.startswith("session_") for name in os.listdir(root)):
        raise ConfigError(f"stop-node --temp-dir {temp_dir}: {root} holds no Ray session (no session_* folder), so it is "
                          f"not a Ray temp dir; {_FIX}")
    return root


def _names(p: psutil.Process, sessions: str) -> bool:
    """Whether `p` names a path below DIR/session_*: in its command line or as a file it holds open."""
    # The path where an argument or a value in it starts (`/x/DIR/session_` is another folder's).
    named = re.compile(r"(?:^|[=:,\s'\"])" + re.escape(sessions))
    if any(named.search(arg) for arg in p.info["cmdline"] or []):
        return True
    try:
        return any(f.path.startswith(sessions) for f in p.open_files())
    except psutil.AccessDenied:  # another user's process: not ours to stop anyway
        return False


def processes(temp_dir: str) -> list[psutil.Process]:
    """The live processes of the Ray instance whose temp dir is `temp_dir`, with their descendants."""
    sessions = os.path.join(_root(temp_dir), "session_")  # no session folder yet: nothing matches
    me = psutil.Process()
    spared = {1, me.pid, *(p.pid for p in me.parents())}  # the shell that runs us names DIR too
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid not in spared and p.pid not in found and _names(p, sessions):
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
