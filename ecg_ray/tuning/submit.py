"""`ecg-ray submit`: send a tuning job to a running cluster and follow it to the end.

    ray up cluster.yaml && ray dashboard cluster.yaml &      # port-forward to 127.0.0.1:8265
    ecg-ray submit experiments/seed_grid.yaml --storage s3://YOUR-BUCKET/ecg_ray_results

The same as `ray job submit --address http://127.0.0.1:8265 --working-dir . --
ecg-ray tune EXPERIMENT ...`, except that only an allow-list of the working
directory is uploaded (the package's sources, experiments/, pyproject.toml, the
experiment file, and what --include names), and the exit status says whether
the job succeeded. Keys, credentials, data and results in the folder stay here.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from ecg_ray.errors import ConfigError

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
# Uploaded from the working dir when present: (path, file patterns).
ALLOWED = (("ecg_ray", ("*.py",)), ("experiments", ("*.yaml", "*.yml")), ("pyproject.toml", ("*",)))
NEVER = ("__pycache__", ".git")


def _files(root: Path, rel: str, patterns=("*",)) -> list[str]:
    """Files under root/rel (a file or a folder) matching patterns, as paths relative to root."""
    path = root / rel
    if path.is_file():
        return [rel]
    found = [p for pattern in patterns for p in path.rglob(pattern) if p.is_file()]
    return sorted({str(p.relative_to(root)) for p in found if not any(part in NEVER for part in p.relative_to(root).parts)})


def stage_upload(working_dir: str, experiment: str, include: list[str] = ()) -> tuple[Path, str, list[str]]:
    """Copy the allow-listed files of `working_dir` into a new temporary folder.

    Returns (the folder, the experiment file's path inside it, the files copied).
    """
    root = Path(working_dir).resolve()
    exp = Path(experiment)
    exp_abs = (root / exp).resolve() if not exp.is_absolute() else exp.resolve()
    if not exp_abs.is_file():
        raise ConfigError(f"Experiment file {experiment} does not exist (looked in {root}).")
    rel_exp = str(exp_abs.relative_to(root)) if exp_abs.is_relative_to(root) else exp_abs.name
    files = [f for rel, patterns in ALLOWED if (root / rel).exists() for f in _files(root, rel, patterns)]
    for extra in include:
        path = (root / extra).resolve()
        if not path.exists() or not path.is_relative_to(root):
            raise ConfigError(f"--include {extra}: no such file or folder inside the working dir {root}.")
        files += _files(root, str(path.relative_to(root)))
    stage = Path(tempfile.mkdtemp(prefix="ecg_ray_submit_"))
    for rel in sorted(set(files)):
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, stage / rel)
    (stage / rel_exp).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(exp_abs, stage / rel_exp)
    return stage, rel_exp, sorted(set(files) | {rel_exp})


def submit(experiment: str, address: str, tune_args: list[str], working_dir: str = ".", wait: bool = True,
           include: list[str] = ()) -> int:
    """Submit `ecg-ray tune EXPERIMENT TUNE_ARGS` as a Ray job; with `wait`, stream its logs.

    Returns 0 when the job succeeded (or was only submitted), 1 otherwise.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    stage, rel_exp, files = stage_upload(working_dir, experiment, include)
    try:
        size = sum((stage / f).stat().st_size for f in files)
        print(f"[ecg-ray] uploading {len(files)} file(s), {size / 1024:.1f} KiB, from {Path(working_dir).resolve()}:", flush=True)
        for f in files:
            print(f"[ecg-ray]   {f}", flush=True)
        client = JobSubmissionClient(address)
        entrypoint = shlex.join(["ecg-ray", "tune", rel_exp, *tune_args])
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(stage)})
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # uploaded by submit_job; the copy is not needed any more
    print(f"[ecg-ray] submitted {job_id}: {entrypoint}", flush=True)
    print(f"[ecg-ray] logs: ray job logs --address {address} --follow {job_id}", flush=True)
    if not wait:
        return 0

    async def follow():
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    print(f"[ecg-ray] job {job_id} {status}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1
