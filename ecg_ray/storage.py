"""Files that are whole or absent: atomic writes, and storage checks before a long run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ecg_ray.errors import ConfigError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike):
    """Yield a temporary path beside `dest`; on success rename it onto `dest`.

    A crash at any point leaves either the old `dest` or the new one, never a
    partial file; on error the temporary file is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def atomic_write_json(dest: str | os.PathLike, obj) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def check_writable(path: str, min_free_bytes: int = 200 * 2**20) -> None:
    """Fail now, not after an hour, when a local storage path cannot take results.

    Bucket URIs are left to Ray's storage layer (it fails on the first write).
    """
    if "://" in path:
        return
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".ecg_ray_write_test"):
            pass
    except OSError as err:
        raise ConfigError(
            f"The storage path {target} is not writable ({err.strerror or err}). "
            "Pass --storage DIR (or set storage_path in the experiment file) to a folder you can write."
        ) from None
    free = shutil.disk_usage(target).free
    if free < min_free_bytes:
        raise ConfigError(
            f"The storage path {target} has {free / 2**20:.0f} MiB free; an experiment needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB for checkpoints and tables. Free space or pass --storage DIR."
        )


def uri_fs(uri: str):
    """(pyarrow filesystem, path inside it) for a bucket URI (s3://, gs://, file://)."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def write_json(path: str, obj) -> None:
    """Write JSON to a local path (atomically) or a bucket URI (one PUT, also all-or-nothing)."""
    if "://" not in path:
        atomic_write_json(path, obj)
        return
    fs, key = uri_fs(path)
    fs.create_dir(key.rsplit("/", 1)[0], recursive=True)  # a no-op on object stores
    with fs.open_output_stream(key) as out:
        out.write((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str):
    """Read JSON from a local path or a bucket URI; None when it does not exist."""
    if "://" not in path:
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)
    import pyarrow.fs

    fs, key = uri_fs(path)
    if fs.get_file_info(key).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(key) as src:
        return json.loads(src.read())


def remove_tree(path: str) -> None:
    """Delete a folder, local or under a bucket URI."""
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, key = uri_fs(path)
    fs.delete_dir(key)
