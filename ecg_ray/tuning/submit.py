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


def _files(root: Path, rel: str, patterns=("*",), refused: list | None = None) -> list[str]:
    """Files under root/rel (a file or a folder) matching patterns, as paths relative to root.

    A symlink is listed only where `_link_ok` allows it; every other link is added to `refused`
    (raised at once without that list), and a linked folder is never descended into.
    """
    refused = [] if refused is None else refused
    path = root / rel
    if path.is_symlink() or path.is_file():
        return [rel] if _link_ok(root, path, refused) else []
    found = []
    for folder, dirs, names in os.walk(path):  # followlinks=False
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if d not in NEVER and not _linked_folder(root, here / d, refused))
        for name in names:
            f = here / name
            if any(fnmatch.fnmatch(name, pattern) for pattern in patterns) and (f.is_symlink() or f.is_file()):
                if _link_ok(root, f, refused):
                    found.append(str(f.relative_to(root)))
    return sorted(found)


def allow_listed(rel: str) -> bool:
    """Whether `rel` (a path relative to the project) is one of the files ALLOWED uploads."""
    parts = Path(rel).parts
    if not parts or set(parts) & set(NEVER):
        return False
    for top, patterns in ALLOWED:
        if parts[0] == top and (len(parts) == 1 or any(fnmatch.fnmatch(parts[-1], pt) for pt in patterns)):
            return True
    return False


def _linked_folder(root: Path, d: Path, refused: list) -> bool:
    """A linked folder is never descended into: one to an allow-listed folder of the project is listed
    at its real place; any other is refused by name."""
    if not d.is_symlink():
        return False
    target = d.resolve()
    inside = target.is_dir() and target.is_relative_to(root)
    if not inside or not (target.relative_to(root).parts[:1] and target.relative_to(root).parts[0] in {t for t, _ in ALLOWED}
                          and not set(target.relative_to(root).parts) & set(NEVER)):
        refused.append(_why(root, d, "points outside the working dir" if target.exists() and not inside else
                            "points nowhere" if not target.exists() else
                            f"points to {target.relative_to(root)}/, which submit does not upload"))
    return True


def _link_ok(root: Path, path: Path, refused: list) -> bool:
    """A plain file, or a symlink whose target is itself inside the project and allow-listed; any other
    link (`ecg_ray/keylink.py -> ../.ssh/id_rsa`: a target in the project, but not one submit uploads;
    a target outside; a dangling one) is refused by name."""
    if not path.is_symlink():
        return True
    target = path.resolve()
    if not target.exists():
        refused.append(_why(root, path, "points nowhere"))
    elif not target.is_relative_to(root):
        refused.append(_why(root, path, "points outside the working dir"))
    elif not allow_listed(str(target.relative_to(root))):
        refused.append(_why(root, path, f"points to {target.relative_to(root)}, which submit does not upload"))
    else:
        return True
    return False


def _why(root: Path, path: Path, what: str) -> str:
    return f"{path.relative_to(root)} -> {os.readlink(path)} {what}"


def _refuse(root: Path, refused: list[str]) -> None:
    if refused:
        raise ConfigError(f"submit never uploads what a link reaches beyond the allow-list, and {len(refused)} link(s) in {root} "
                          f"do: {'; '.join(refused)}. Nothing was uploaded. Remove the link(s), or copy the file into the "
                          "project and --include it.")


def check_experiment(path: Path) -> list[str]:
    """The experiment file is what `ecg-ray tune` accepts, before anything is staged.

    Data paths name the cluster's filesystem, so only the file itself is checked here (the
    job checks its data before any trial); cmd_submit checks the `tune` options.
    """
    from ecg_ray.config import load_experiment

    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{path} is not an experiment file (a .yaml or .yml file such as experiments/quick.yaml); "
                          "nothing was uploaded.")
    from ecg_ray.models import needed_plugins

    cfg = load_experiment(path, **{"data.trust_pickle": True})  # a pickle's trust is the job's `tune` to check
    return needed_plugins(cfg.search_space)


def stage_upload(working_dir: str, experiment: str, include: list[str] = ()) -> tuple[Path, str, list[str]]:
    """Copy the allow-listed files of `working_dir` into a new temporary folder (and say which plug-in
    packages, if any, the experiment's models need on the cluster).

    Returns (the folder, the experiment file's path inside it, the files copied). The
    experiment file and every file to upload are checked first; a refusal stages nothing.
    """
    root = Path(working_dir).resolve()
    exp = Path(experiment)
    exp_abs = (root / exp).resolve() if not exp.is_absolute() else exp.resolve()
    if not exp_abs.is_file():
        raise ConfigError(f"Experiment file {experiment} does not exist (looked in {root}).")
    plugins = check_experiment(exp_abs)
    if plugins:
        from ecg_ray.models import plugins_note

        print(f"[ecg-ray] {plugins_note(plugins)}.", flush=True)
    rel_exp = str(exp_abs.relative_to(root)) if exp_abs.is_relative_to(root) else exp_abs.name
    refused: list[str] = []
    files = [f for rel, patterns in ALLOWED if (root / rel).exists() or (root / rel).is_symlink()
             for f in _files(root, rel, patterns, refused)]
    for extra in include:
        given = root / extra
        path = given.resolve()
        if not path.exists() or not path.is_relative_to(root):
            raise ConfigError(f"--include {extra}: no such file or folder inside the working dir {root}.")
        if given.is_symlink():
            raise ConfigError(f"--include {extra} is a symlink ({os.readlink(given)}); include the file it points to by its "
                              "own path. Nothing was uploaded.")
        files += _files(root, str(path.relative_to(root)), ("*",), refused)
    _refuse(root, refused)
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
