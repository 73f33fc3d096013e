"""`ecg-ray submit`: send a tuning job to a running cluster and follow it to the end.

    ray up cluster.yaml && ray dashboard cluster.yaml &      # port-forward to 127.0.0.1:8265
    ecg-ray submit experiments/seed_grid.yaml --storage s3://YOUR-BUCKET/ecg_ray_results

The same as `ray job submit --address http://127.0.0.1:8265 --working-dir . --
ecg-ray tune EXPERIMENT ...`, with the project's excludes, and an exit status
that says whether the job succeeded.
"""

from __future__ import annotations

import asyncio
import shlex
import sys

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
EXCLUDES = [".git", "**/__pycache__", "*.egg-info", "data/", ".pytest_cache"]


def submit(experiment: str, address: str, tune_args: list[str], working_dir: str = ".", wait: bool = True) -> int:
    """Submit `ecg-ray tune EXPERIMENT TUNE_ARGS` as a Ray job; with `wait`, stream its logs.

    Returns 0 when the job succeeded (or was only submitted), 1 otherwise.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    entrypoint = shlex.join(["ecg-ray", "tune", experiment, *tune_args])
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": working_dir, "excludes": EXCLUDES})
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
