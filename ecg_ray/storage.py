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
import hashlib
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


# --- what a location allows: asked here, so that no phase asks whether a folder is local ---


def canonical(location: str) -> str:
    """One name per folder, to tell two locations apart: a local path through its links, a URI as given."""
    return location if is_uri(location) else os.path.realpath(location)


def writable(folder: str) -> bool:
    """Whether files can be written in `folder`, as far as is known before writing: on a local disk, a
    file can be made there (a folder not made yet: True, it is made when written); a bucket answers only
    its first write (True)."""
    if is_uri(folder) or not os.path.isdir(folder):
        return True
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ecg_ray_write_test"):
            return True
    except OSError:
        return False


def prepare_folder(folder: str) -> tuple[list[Path], int | None]:
    """Make `folder` and prove a file can be written there, before a run: (the folders made, deepest
    first; the bytes free there). Raises OSError when it cannot be. A bucket answers only its first
    write, and has no free space to tell: ([], None)."""
    if is_uri(folder):
        return [], None
    target = Path(folder)
    made = [p for p in (target, *target.parents) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target, prefix=".ecg_ray_write_test"):
        pass
    return made, shutil.disk_usage(target).free


def cheap_writes(location: str) -> bool:
    """Whether a small write at every step costs next to nothing here (a local disk), or is a request
    each (a bucket: write at the milestones instead)."""
    return not is_uri(location)


def append_line(location: str, line: str) -> bool:
    """Append one line to a text file; False, with nothing written, where there is no append (an object store)."""
    if is_uri(location):
        return False
    with open(location, "a") as f:
        f.write(line + "\n")
    return True


def appended_lines(location: str) -> list[str]:
    """The lines append_line wrote to `location` ([] when none was: none yet, or an object store)."""
    if is_uri(location) or not os.path.isfile(location):
        return []
    with open(location) as f:
        return [line for line in f if line.strip()]


def lock_file(folder: str, cache: str) -> tuple[str, bool]:
    """(where this machine locks `folder`, whether that file goes when the folder was never used). On a
    local disk it lies beside the folder (`.NAME.lock`, so that the folder can be removed while locked);
    a bucket has no locks, so a bucket folder is locked on this machine only, under `cache`, and kept."""
    if is_uri(folder):
        return os.path.join(cache, "locks", hashlib.sha256(folder.encode()).hexdigest()[:16] + ".lock"), False
    return join(parent(folder), f".{basename(folder)}.lock"), True


def local_files(locations: list[str], tmp: str) -> list[str]:
    """Local paths of those of `locations` that hold a file: themselves on a local disk, else each
    downloaded into `tmp` (for a library that takes local files only, such as MLflow's uploads)."""
    out = []
    for location in locations:
        if not is_uri(location):
            out += [location] if os.path.isfile(location) else []
            continue
        data = read_optional(location)
        if data is not None:
            out.append(os.path.join(tmp, basename(location)))
            Path(out[-1]).write_bytes(data)
    return out


def local_tree(folder: str, tmp: str) -> str | None:
    """A local folder holding the files of `folder` (None where it holds none): itself on a local disk,
    else a download into `tmp`."""
    if not is_uri(folder):
        return folder if os.path.isdir(folder) else None
    found = files(folder)
    dest = os.path.join(tmp, basename(folder))
    for rel in found:
        Path(dest, rel).parent.mkdir(parents=True, exist_ok=True)
        Path(dest, rel).write_bytes(read_bytes(join(folder, rel)))
    return dest if found else None


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
