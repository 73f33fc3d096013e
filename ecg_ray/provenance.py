"""Where numbers came from: library versions and the ecg_ray commit, recorded with every run and checkpoint."""

from __future__ import annotations

__version__ = "0.1.0"  # pyproject.toml's

def library_versions() -> dict:
    """Versions that decide whether a checkpoint's numbers can be reproduced. Read from the
    installed packages' metadata, so that naming them imports none of them: the `ecg-ray tune`
    process does not need torch (its import is a second of the command's start)."""
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    out = {"ecg_ray": __version__, "python": platform.python_version()}
    for name in ("torch", "numpy", "ray"):
        module = sys.modules.get(name)
        try:
            out[name] = str(module.__version__) if module else version(name)
        except PackageNotFoundError:  # not installed (Ray, on the plain-PyTorch path)
            pass
    return out


def git_commit() -> str | None:
    """The commit of the ecg_ray checkout this runs from (an editable install), with "+dirty" for local
    changes; None for an installed package or where git is missing."""
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")
