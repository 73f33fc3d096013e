"""A real multi-node Ray cluster on this machine: `ray start --head` plus `ray start --address` nodes.

Every node gets its own short --temp-dir under one root folder, and its own HOME, TMPDIR and
ecg_ray cache below it: as on a cluster, nodes share no disk, so what they share must go
through the experiment's storage (a bucket). `stop()` kills exactly the processes that name
that root, found as `ecg-ray stop-node` finds them (never `ray stop`, which would also stop
any other Ray on the machine).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager

import psutil

from ecg_ray.tuning.nodes import kill, processes


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listened_on(port: int) -> bool:
    """Whether a process listens on `port` on any IPv4 address (a dual-stack IPv6 listener included)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no listener
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
        return False


# The `ray` of this Python, not a shim that looks for its installation under $HOME.
RAY = os.path.join(os.path.dirname(sys.executable), "ray") if os.path.isfile(os.path.join(os.path.dirname(sys.executable), "ray")) else "ray"

ENV = {
    "RAY_AUTH_MODE": "disabled",  # a token from an earlier local ray.init() would lock the CLI out
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",  # nodes must reach each other (the test session sets 0)
}


def _log_errors(temp: str, lines: int = 12) -> str:
    """What a node's GCS and raylet logs say went wrong, for a failed start's message."""
    found = []
    for log in sorted(glob.glob(os.path.join(temp, "session_2*", "logs", "*.out"))):  # not the session_latest link
        if os.path.basename(log).startswith(("gcs_server", "raylet")):
            with open(log, errors="replace") as f:
                text = f.readlines()
            errors = [line for line in text if re.search(r"error|fail|fatal|check failed", line, re.I)]
            found.append(f"--- {log}\n" + "".join((errors or text)[:lines]))
    return "\n".join(found) or f"(no GCS or raylet log under {temp})"


class LocalCluster:
    """Start with `LocalCluster().start_head(...)`, add nodes with `add_node`, end with `stop`."""

    def __init__(self, own_disks: bool = True):
        # Short paths: Ray's Unix sockets live under the temp dir and are limited to ~107 chars.
        self.root = tempfile.mkdtemp(prefix="ecgr", dir="/tmp")
        self.own_disks = own_disks  # each node its own HOME, TMPDIR and ecg_ray cache
        # This Python's scripts first: a pyenv shim looks for its installation under $HOME, and a node's HOME is its own.
        self.env = {**os.environ, **ENV, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        self.port = free_port()
        self.dashboard_port = free_port()
        self.nodes: list[str] = []
        self.ports: dict[str, list[int]] = {}  # per node, the ports its `ray start` was given

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray_start(self, name: str, args: list[str], extra_env: dict | None = None) -> None:
        """`ray start` one node; a start that fails is tried once more.

        Ray gives a new node 30 s to show up in the GCS, which a busy 2-core machine (CI
        runs other Ray instances beside this one) can miss. The retry keeps the cluster's
        address (callers may have written it into a config already). The second failure
        raises with what `ray start` printed and the errors in the node's GCS and raylet logs.
        """
        temp = os.path.join(self.root, name)
        for attempt in (1, 2):
            os.makedirs(temp)
            own = {key: os.path.join(temp, sub) for key, sub in (("HOME", "home"), ("TMPDIR", "tmp"), ("ECG_RAY_CACHE", "cache"))
                   if self.own_disks}
            for folder in own.values():
                os.makedirs(folder)
            cmd = [RAY, "start", f"--temp-dir={temp}", "--disable-usage-stats", f"--object-store-memory={500 * 2**20}",
                   f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}", *args]
            out = subprocess.run(cmd, env={**self.env, **own, **(extra_env or {})}, capture_output=True, text=True, timeout=120)
            if out.returncode == 0:
                self.nodes.append(name)
                self.ports[name] = [int(a.split("=")[1]) for a in cmd if re.fullmatch(r"--[a-z-]*port=\d+", a)]
                return
            why = f"`ray start` of node {name!r} failed (exit {out.returncode}):\n{out.stderr[-2000:]}\n{_log_errors(temp)}"
            kill(temp)
            shutil.rmtree(temp, ignore_errors=True)
            if attempt == 1:
                warnings.warn(f"{why}\nretrying once", stacklevel=2)
        raise RuntimeError(why)

    def start_head(self, num_cpus: int = 0, resources: dict | None = None, extra_env: dict | None = None, args=()) -> "LocalCluster":
        self._ray_start("head", [
            "--head", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={free_port()}", f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources or {})}", *args,
        ], extra_env)
        return self

    def add_node(self, name: str, num_cpus: int, resources: dict | None = None) -> None:
        self._ray_start(name, [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources or {})}"])

    def processes(self, node: str | None = None) -> list[psutil.Process]:
        """Processes of the whole cluster, or of one node (by its temp dir), as `ecg-ray stop-node` finds them."""
        found = {p.pid: p for name in ([node] if node else self.node_dirs()) for p in processes(os.path.join(self.root, name))}
        return list(found.values())

    def node_dirs(self) -> list[str]:
        """Every node temp dir under the root, a failed or removed node's included (its leftovers are still ours)."""
        return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []

    def kill_node(self, node: str) -> int:
        """SIGKILL every process of one node, as a lost machine would vanish. Returns how many."""
        return kill(os.path.join(self.root, node), passes=1)

    def nodes_info(self) -> list[dict]:
        """`ray.nodes()` of the cluster, read in a subprocess (this process may hold another Ray)."""
        code = "import json, ray; ray.init(address='%s', logging_level='ERROR'); print('NODES=' + json.dumps(ray.nodes()))" % self.address
        out = subprocess.run(["python", "-c", code], env=self.env, capture_output=True, text=True, timeout=120, check=True)
        (line,) = [l for l in out.stdout.splitlines() if l.startswith("NODES=")]
        return json.loads(line[len("NODES="):])

    @contextmanager
    def watch_nodes(self, every_s: float = 1.0):
        """Every node seen alive while the block runs, by node ID, with the resources it had then.

        `ray.nodes()` keeps a removed node with no resources, so what a node was must be read while
        it lives: a subprocess connected to the cluster lists the alive nodes every `every_s` seconds.
        The dict is filled when the block ends.
        """
        code = ("import json, time, ray; ray.init(address='%s', logging_level='ERROR')\n"
                "while True:\n"
                "    alive = {n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}\n"
                "    print('ALIVE=' + json.dumps(alive), flush=True); time.sleep(%r)\n") % (self.address, every_s)
        watcher = subprocess.Popen(["python", "-c", code], env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        seen: dict[str, dict] = {}
        try:
            yield seen
        finally:
            watcher.kill()
            out, _ = watcher.communicate(timeout=60)
            for line in out.splitlines():
                if line.startswith("ALIVE="):
                    seen.update(json.loads(line[len("ALIVE="):]))

    def job_submit(self, working_dir: str | None, entrypoint: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        """`ray job submit`; working_dir None uploads nothing (the entrypoint then names absolute paths)."""
        upload = ["--working-dir", working_dir] if working_dir else []
        cmd = [RAY, "job", "submit", "--address", self.dashboard, *upload, "--", *entrypoint]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        for name in self.node_dirs():
            kill(os.path.join(self.root, name))
        shutil.rmtree(self.root, ignore_errors=True)
