"""The one storage layer: every read and write of experiment folders, model files and data files.

    python -c "from ecg_ray.storage import read_bytes; print(len(read_bytes('s3://bucket/results/quick/best_model.pt')))"

A location is a local path or a URI (s3://, gs://, gcs://, file://); an S3-compatible
server is s3:// with the standard AWS_ENDPOINT_URL (and the usual AWS access-key
variables), which pyarrow honours. URIs go through pyarrow.fs, imported only
when a URI is used. Every function here takes either; no other module tells a path from
a URI. Writes are whole or absent: local files through a temporary name and a rename,
objects through one PUT.

Where a file must be local (torch.load of a checkpoint, Ray Train's own checkpoint
upload), `local_copy` gives one. Every read is counted in `READS` (and, with
ECG_RAY_READ_LOG set, appended to that file), so a test can hold each command to its
read budget.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

# The storage URIs Ray Train and ecg_ray both read and write (pyarrow's filesystems; hdfs:// needs a
# Hadoop client on every node, so it is left out rather than failing an hour in).
SCHEMES = ("s3", "gs", "gcs", "file")
READ_LOG_ENV = "ECG_RAY_READ_LOG"  # a file: one line per read, "pid<TAB>location" (the read-budget tests)

READS: collections.Counter = collections.Counter()  # location -> reads by this process


_COUNTING = threading.Lock()  # reads of a bucket run in threads (read_many)


def _count(location: str) -> None:
    with _COUNTING:
        READS[location] += 1
        log = os.environ.get(READ_LOG_ENV)
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\t{location}\n")


# --- locations --------------------------------------------------------------------------


def is_uri(location: str) -> bool:
    """True for URIs (s3://, gs://, file://), False for local paths."""
    return "://" in str(location)


def scheme(location: str) -> str:
    """The scheme of a URI (`s3`), '' for a local path."""
    return str(location).partition("://")[0] if is_uri(location) else ""


def expand(location: str) -> str:
    """A local path made absolute with ~ expanded; a URI without its trailing '/'."""
    if is_uri(location):
        return str(location).rstrip("/")
    return str(Path(os.path.expanduser(str(location))).resolve())


def join(base: str, *parts: str) -> str:
    """Join a local path or a URI."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(base, *parts))


def parent(location: str) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[0]


def basename(location: str) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def uri_fs(uri: str):
    """(pyarrow filesystem, path inside it) for a URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


# --- reading ----------------------------------------------------------------------------


def is_file(location: str) -> bool:
    if not is_uri(location):
        return os.path.isfile(location)
    import pyarrow.fs

    fs, key = uri_fs(location)
    return fs.get_file_info(key).type == pyarrow.fs.FileType.File


def is_dir(location: str) -> bool:
    if not is_uri(location):
        return os.path.isdir(location)
    import pyarrow.fs

    fs, key = uri_fs(location)
    return fs.get_file_info(key).type == pyarrow.fs.FileType.Directory


def read_bytes(location: str) -> bytes:
    """A whole file, local or an object. Raises FileNotFoundError when it is not there."""
    _count(location)
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, key = uri_fs(location)
    with fs.open_input_stream(key) as src:
        return src.read()


def read_many(locations: list[str], threads: int = 16) -> list[bytes]:
    """Whole files, in order: a bucket's in parallel (one request each, `threads` at a time: a folder
    of a thousand trials is two thousand small objects), local ones in turn."""
    if len(locations) < 2 or not any(is_uri(loc) for loc in locations):
        return [read_bytes(loc) for loc in locations]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ecg-ray-read") as pool:
        return list(pool.map(read_bytes, locations))


def read_optional(location: str) -> bytes | None:
    """A whole file, or None when it does not exist (one request on a bucket)."""
    try:
        return read_bytes(location)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as err:  # pyarrow says a missing object with an OSError naming it
        if is_uri(location) and ("not exist" in str(err) or "NoSuchKey" in str(err) or "Path does not exist" in str(err)):
            return None
        raise


def files(location: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Relative path -> size of every file under a folder (one listing of a bucket prefix); {} when
    it does not exist. Folders whose relative path starts with one of `skip` are not entered
    locally (a bucket lists them anyway, and they are dropped)."""
    if not is_uri(location):
        out: dict[str, int] = {}
        if not os.path.isdir(location):
            return out
        for root, dirs, names in os.walk(location):
            rel_root = os.path.relpath(root, location)
            rel_root = "" if rel_root == "." else rel_root + "/"
            dirs[:] = sorted(d for d in dirs if not (rel_root + d + "/").startswith(skip))
            for name in names:
                with contextlib.suppress(OSError):
                    out[rel_root + name] = os.path.getsize(os.path.join(root, name))
        return out
    import pyarrow.fs

    fs, root = uri_fs(location)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    rels = {i.path[len(root):].lstrip("/"): i.size for i in infos if i.type == pyarrow.fs.FileType.File}
    return {rel: size for rel, size in sorted(rels.items()) if not rel.startswith(skip)}


@contextlib.contextmanager
def local_copy(location: str) -> Iterator[str]:
    """A local path holding the file at `location`: itself when local, else a temporary download."""
    if not is_uri(location):
        yield location
        return
    with tempfile.TemporaryDirectory(prefix="ecg_ray_") as tmp:
        dest = os.path.join(tmp, basename(location))
        Path(dest).write_bytes(read_bytes(location))
        yield dest


# --- writing ----------------------------------------------------------------------------


def current_umask() -> int:
    """The process umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike):
    """Yield a temporary path beside `dest`; on success rename it onto `dest`.

    A crash at any point leaves either the old `dest` or the new one, never a
    partial file; on error the temporary file is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; open() would have honoured the umask
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
    atomic_write_text(dest, dumps(obj))


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def write_bytes(location: str, data: bytes) -> None:
    """Write a file whole: atomically on a local disk, one PUT on a bucket."""
    if not is_uri(location):
        with atomic_path(location) as tmp:
            tmp.write_bytes(data)
        return
    fs, key = uri_fs(location)
    fs.create_dir(key.rsplit("/", 1)[0], recursive=True)  # a no-op on object stores
    with fs.open_output_stream(key) as out:
        out.write(data)


def copy_to(local_files: list[str], folder: str) -> list[str]:
    """Copy local files into `folder` (local or a URI); returns where each went."""
    out = []
    for path in local_files:
        dest = join(folder, Path(path).name)
        if not (not is_uri(dest) and os.path.abspath(dest) == os.path.abspath(path)):
            write_bytes(dest, Path(path).read_bytes())
        out.append(dest)
    return out


def write_folder(folder: str, draw, stale: tuple[str, ...] = ()) -> list[str]:
    """Run `draw(local_dir) -> [local files]` and return where the files are: `folder` itself when it
    is local, else a temporary folder whose files are then copied into `folder` (a bucket), where
    the names in `stale` are removed when none of them was drawn this time (an older run's files of
    what this run did not draw)."""
    if not is_uri(folder):
        return draw(Path(folder))
    with tempfile.TemporaryDirectory(prefix="ecg_ray_draw_") as tmp:
        written = draw(Path(tmp))
        if not {Path(w).name for w in written} & set(stale):
            for name in stale:
                remove_file(join(folder, name))
        return copy_to(written, folder)


def remove_file(location: str) -> None:
    """Delete one file, if it is there."""
    if not is_uri(location):
        Path(location).unlink(missing_ok=True)
        return
    import pyarrow.fs

    fs, key = uri_fs(location)
    if fs.get_file_info(key).type == pyarrow.fs.FileType.File:
        fs.delete_file(key)


def remove_tree(location: str) -> None:
    """Delete a folder, local or under a URI."""
    if not is_uri(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    fs, key = uri_fs(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(key)


def local_sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL (an Optuna or MLflow store on this machine); None for any other URL
    or an in-memory database."""
    head = "sqlite:///"
    if not str(url).startswith(head) or str(url) == head or ":memory:" in str(url):
        return None
    return Path(str(url)[len(head):])  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
