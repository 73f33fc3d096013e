"""`ray up` / submit / `ray down` for real: Ray's launcher reaches a head over SSH on loopback.

An OpenSSH server of the test's own (host key, config, port on 127.0.0.1, a throwaway
client key) runs in a PID namespace of its own (`unshare --pid --mount-proc`), so that
the bare `ray stop` that `ray down` issues on the head sees only the processes started
over that SSH server and never the test session's own Ray. A generated copy of
cluster-onprem.yaml points at it: head 127.0.0.1, no workers (so the head gets the CPUs
to run the trials), a short temp dir, free ports, and a temporary HOME for the SSH
account, whose ~/.bashrc puts this machine's Python on PATH as a host's would. Everything
else is the file's: file mounts, setup commands (its own venv, installed from pyproject.toml as on a
real host, though seeing this machine's packages: test_contracts holds the dependency list), start commands.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from localcluster import free_port

from ecg_ray.tuning.nodes import kill, processes

SSHD = "/usr/sbin/sshd"
HERE = Path(__file__).parent
LOG = Path(os.environ.get("ECG_RAY_RAY_UP_LOG", tempfile.gettempdir())) / "ecg_ray_ray_up.log"


def _missing() -> str | None:
    for tool in ("ssh", "ssh-keygen", "rsync", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is not installed (.ci/run installs openssh-server and rsync from Debian)"
    if not os.path.exists(SSHD):
        return "OpenSSH's sshd is not installed (.ci/run installs Debian's openssh-server)"
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode != 0:
        return "cannot make a PID namespace here (unshare --pid), which keeps `ray down`'s `ray stop` off this session's Ray"
    return None


def _run(cmd: list[str], log, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    log.write(out.stdout + out.stderr + f"[exit {out.returncode}]\n")
    log.flush()
    return out


class SshServer:
    """sshd on 127.0.0.1:PORT in its own PID namespace, accepting one throwaway key."""

    def __init__(self, root: Path, home: Path):
        self.root, self.port, self.user = root, free_port(), getpass.getuser()
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
        shutil.copy(root / "client_key.pub", root / "authorized_keys")
        (root / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {root}/host_key", f"PidFile {root}/sshd.pid",
            f"AuthorizedKeysFile {root}/authorized_keys", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
            f"AllowUsers {self.user}", f"SetEnv HOME={home}", "",
        ]))
        os.makedirs("/run/sshd", exist_ok=True)  # Debian's sshd wants its privilege-separation folder
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "w"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()}")

    @property
    def proxy(self) -> str:
        return f"{sys.executable} {HERE / 'sshrelay.py'} 127.0.0.1 {self.port}"

    def ssh(self, command: str, log, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run(["ssh", "-i", str(self.root / "client_key"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", f"ProxyCommand={self.proxy}", "-o", "LogLevel=ERROR", f"{self.user}@127.0.0.1",
                     f"bash --login -c -i 'source ~/.bashrc; {command}'"], log, timeout)

    def stop(self) -> None:
        self.proc.terminate()  # --kill-child: sshd, PID 1 of the namespace, dies, and the kernel ends the rest
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def onprem_copy(ssh: SshServer, temp_dir: str, ports: dict) -> dict:
    raw = yaml.safe_load(Path("cluster-onprem.yaml").read_text())
    raw["cluster_name"] = f"ecgup{uuid.uuid4().hex[:8]}"
    raw["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    raw["auth"] = {"ssh_user": ssh.user, "ssh_private_key": str(ssh.root / "client_key"), "ssh_proxy_command": ssh.proxy}
    # The setup commands run as written, but for one flag: the venv sees this machine's packages
    # (--system-site-packages), so pip installs the project alone instead of Ray and torch again
    # (90 s of the test). That a runtime dependency is in pyproject.toml is held by
    # tests/test_contracts.py::test_every_package_ecg_ray_imports_is_a_runtime_dependency.
    raw["setup_commands"] = [c.replace("python3 -m venv ", "python3 -m venv --system-site-packages ")
                             for c in raw["setup_commands"]]
    assert any("--system-site-packages" in c for c in raw["setup_commands"]), raw["setup_commands"]
    start = [c.replace("/tmp/ecg_ray_cluster", temp_dir) for c in raw["head_start_ray_commands"]]
    start[-1] = (start[-1].replace(":6379", f":{ports['gcs']}").replace("--port=6379", f"--port={ports['gcs']}")
                 .replace("--num-cpus=0", "--num-cpus=2")  # no worker hosts here: the head runs the trials
                 + f" --dashboard-port={ports['dashboard']} --ray-client-server-port={free_port()}"
                 f" --dashboard-agent-listen-port={free_port()} --metrics-export-port={free_port()}"
                 f" --object-store-memory={500 * 2**20}")
    raw["head_start_ray_commands"] = start
    return raw


@pytest.mark.cluster
def test_ray_up_submit_report_ray_down_over_ssh():
    missing = _missing()
    if missing:
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="ecgup", dir="/tmp"))  # short: Ray's socket paths live below it
    home = root / "home"
    home.mkdir()
    # The account's shell start-up file puts this machine's Python 3 (and its `ray`) on PATH, as a host's would.
    (home / ".bashrc").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    temp_dir, other_dir = str(root / "ray"), str(root / "other")
    ports = {"gcs": free_port(), "dashboard": free_port()}
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    ssh = SshServer(root, home)
    config = root / "cluster.yaml"
    raw = onprem_copy(ssh, temp_dir, ports)
    config.write_text(yaml.safe_dump(raw))
    launcher = ["--log-style", "record", "--log-color", "false"]
    caches = set(Path(tempfile.gettempdir()).glob("ray-config-*"))  # the launcher's config cache, removed after
    t0 = time.monotonic()
    with open(LOG, "w") as log:
        try:
            up = _run(["ray", "up", "-y", "--no-config-cache", *launcher, str(config)], log, 600, env)
            assert up.returncode == 0, LOG.read_text()[-4000:]
            assert (home / "ecg_ray" / "pyproject.toml").is_file()  # the file mount, by rsync over SSH
            assert (home / "ecg_ray_cluster" / "venv" / "bin" / "ecg-ray").exists()  # the setup commands' venv
            assert processes(temp_dir), "no Ray process of the cluster after `ray up`"

            # Another Ray instance on the head host, not the cluster's: a restart must leave it alone.
            other = ssh.ssh(f"RAY_USAGE_STATS_ENABLED=0 ray start --head --port={free_port()} --num-cpus=0 "
                            f"--temp-dir={other_dir} --dashboard-port={free_port()} --include-dashboard=false "
                            f"--ray-client-server-port={free_port()} --dashboard-agent-listen-port={free_port()} "
                            f"--metrics-export-port={free_port()} --object-store-memory={100 * 2**20}", log)
            assert other.returncode == 0, other.stderr
            others = {p.pid for p in processes(other_dir)}
            first = {p.pid for p in processes(temp_dir)}
            restart = _run(["ray", "up", "-y", "--restart-only", "--no-config-cache", *launcher, str(config)], log, 300, env)
            assert restart.returncode == 0, LOG.read_text()[-4000:]
            assert {p.pid for p in processes(other_dir)} == others  # the start commands stopped only their own Ray
            assert processes(temp_dir) and not first & {p.pid for p in processes(temp_dir)}  # the cluster's Ray is new

            storage = root / "results"
            # The quick grid at a fifth of its size (its 2 trials; the job's wall time is Ray's, not training).
            tiny = yaml.safe_load(Path("experiments/quick.yaml").read_text())
            tiny["data"]["n_records"], tiny["search"]["epochs"] = 160, 2
            tiny["report"] = {"latency_repeats": 0}  # the costs are tested in test_ray_tune
            (root / "quick.yaml").write_text(yaml.safe_dump(tiny))  # outside the project: submit packs it by name
            job = _run(["ecg-ray", "submit", "--address", f"http://127.0.0.1:{ports['dashboard']}", str(root / "quick.yaml"),
                        "--storage", str(storage), "--overwrite"], log, 900, env)
            assert job.returncode == 0, LOG.read_text()[-4000:]
            assert "Ranked by best validation macro-F1 (2 trials" in job.stdout
            report = _run(["ecg-ray", "report", str(storage / "quick")], log, 300, env)
            assert report.returncode == 0 and (storage / "quick" / "report" / "index.html").is_file()
            nodes = {json.loads(l)["node_id"] for l in (storage / "quick" / "progress.jsonl").read_text().splitlines()}
            assert len(nodes) == 1

            down = _run(["ray", "down", "-y", *launcher, str(config)], log, 300, env)
            assert down.returncode == 0, LOG.read_text()[-4000:]
            deadline = time.monotonic() + 60
            while processes(temp_dir) and time.monotonic() < deadline:
                time.sleep(1)
            assert processes(temp_dir) == [], "Ray processes of the cluster outlived `ray down`"
            log.write(f"\n[test] ray up, restart, submit, report, ray down: {time.monotonic() - t0:.0f} s\n")
        finally:
            ssh.stop()
            for instance in (temp_dir, other_dir):  # should find none: a failed assert above may leave some
                kill(instance)
            for suffix in ("state", "lock"):
                Path(f"/tmp/ray/cluster-{raw['cluster_name']}.{suffix}").unlink(missing_ok=True)
            for cache in set(Path(tempfile.gettempdir()).glob("ray-config-*")) - caches:
                cache.unlink(missing_ok=True)
            shutil.rmtree(root, ignore_errors=True)
