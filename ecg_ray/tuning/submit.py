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
import fnmatch
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from ecg_ray.errors import ConfigError, EcgRayError

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
# Uploaded from the working dir when present: (path, file patterns).
ALLOWED = (("ecg_ray", ("*.py",)), ("experiments", ("*.yaml", "*.yml")), ("pyproject.toml", ("*",)))
NEVER = ("__pycache__", ".git")


def _files(root: Path, rel: str, patterns=("*",)) -> list[str]:
    """Files under root/rel (a file or a folder) matching patterns, as paths relative to root.

    Never follows a link out of the project: a symlink whose target lies outside `root`
    (`ecg_ray/keylink.py -> ~/.ssh/id_rsa`) is refused by name; one inside is uploaded as the
    file it points to, and a linked folder is not descended into (its real place is listed).
    """
    path = root / rel
    if path.is_symlink() or path.is_file():
        _inside(root, path)
        return [rel]
    found = []
    for folder, dirs, names in os.walk(path):  # followlinks=False
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if d not in NEVER and not _linked_folder(root, here / d))
        for name in names:
            f = here / name
            if any(fnmatch.fnmatch(name, pattern) for pattern in patterns) and (f.is_symlink() or f.is_file()):
                _inside(root, f)
                found.append(str(f.relative_to(root)))
    return sorted(found)


def _linked_folder(root: Path, d: Path) -> bool:
    if d.is_symlink():
        _inside(root, d)
        return True
    return False


def _inside(root: Path, path: Path) -> None:
    """Refuse a symlink that leaves the project; a dangling one too."""
    if not path.is_symlink():
        return
    target = path.resolve()
    if not target.is_relative_to(root) or not target.exists():
        where = "points outside the working dir" if target.exists() else "points nowhere"
        raise ConfigError(f"{path.relative_to(root)} is a symlink that {where} ({os.readlink(path)}): submit never uploads what "
                          f"a link reaches beyond {root}. Remove the link, or copy the file into the project and --include it.")


def check_experiment(path: Path) -> None:
    """The experiment file is what `ecg-ray tune` accepts, before anything is staged.

    Data paths name the cluster's filesystem, so only the file itself is checked here (the
    job checks its data before any trial); cmd_submit checks the `tune` options.
    """
    from ecg_ray.config import load_experiment

    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{path} is not an experiment file (a .yaml or .yml file such as experiments/quick.yaml); "
                          "nothing was uploaded.")
    load_experiment(path, **{"data.trust_pickle": True})  # a pickle's trust is the job's `tune` to check


def stage_upload(working_dir: str, experiment: str, include: list[str] = ()) -> tuple[Path, str, list[str]]:
    """Copy the allow-listed files of `working_dir` into a new temporary folder.

    Returns (the folder, the experiment file's path inside it, the files copied). The
    experiment file and every file to upload are checked first; a refusal stages nothing.
    """
    root = Path(working_dir).resolve()
    exp = Path(experiment)
    exp_abs = (root / exp).resolve() if not exp.is_absolute() else exp.resolve()
    if not exp_abs.is_file():
        raise ConfigError(f"Experiment file {experiment} does not exist (looked in {root}).")
    check_experiment(exp_abs)
    rel_exp = str(exp_abs.relative_to(root)) if exp_abs.is_relative_to(root) else exp_abs.name
    files = [f for rel, patterns in ALLOWED if (root / rel).exists() for f in _files(root, rel, patterns)]
    for extra in include:
        given = root / extra
        path = given.resolve()
        if not path.exists() or not path.is_relative_to(root):
            raise ConfigError(f"--include {extra}: no such file or folder inside the working dir {root}.")
        files += _files(root, str(given.relative_to(root)) if given.is_relative_to(root) else str(path.relative_to(root)))
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
        entrypoint = shlex.join(["ecg-ray", "tune", rel_exp, *tune_args])
        try:
            client = JobSubmissionClient(address)
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(stage)})
        except (ConnectionError, OSError) as err:  # requests' errors are OSErrors
            raise EcgRayError(f"Cannot reach the Ray dashboard at {address} ({type(err).__name__}: {_first_line(err)}); "
                              "nothing was submitted. Is the cluster up? `ray dashboard cluster.yaml` forwards its "
                              "dashboard to http://127.0.0.1:8265; or pass --address.") from None
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else "")[:200]
