"""Which pickle files may be loaded: the ones the user names, as they were when named.

Loading a pickle runs code stored in it. The user's word is `--trust-pickle FILE`, one
per pickle, and it names the file: a folder (an experiment folder someone copied, or
edited) can name another pickle, and that one stays refused. On a resume, a rerun or a
repeat the file must also hold what it held when the experiment started: its SHA-256 is
recorded in the experiment file before any trial, and checked before the file is read.
An experiment file the user writes may still say `data.trust_pickle: true` (their own
file, their own word); a folder's copy of that setting never counts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from ecg_ray.errors import ConfigError

PICKLE_SUFFIXES = (".pkl", ".pickle")


def is_pickle(path: str | None) -> bool:
    return bool(path) and str(path).endswith(PICKLE_SUFFIXES)


def pickle_paths(data) -> list[str]:
    """The pickle files a DataConfig reads, as given."""
    found = [p for p in (data.path, data.val_path) if p and data.source == "pickle"]
    return found + ([data.test_path] if is_pickle(data.test_path) else [])


def sha256(path: str) -> str:
    """The file's SHA-256, read as bytes (hashing a pickle runs nothing)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _same(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def check_named(pickles: Sequence[str], trusted: Sequence[str], where: str) -> None:
    """Every pickle in `pickles` is named by `--trust-pickle`, and every named file is one of them.

    `where` says what names the pickles ("the experiment file x.yaml", "the experiment folder y").
    """
    named = {_same(t): t for t in trusted}
    untrusted = [p for p in pickles if _same(p) not in named]
    if untrusted:
        flags = " ".join(f"--trust-pickle {p}" for p in untrusted)
        raise ConfigError(f"{where} reads the pickle {', '.join(untrusted)}, which no --trust-pickle names: loading a "
                          f"pickle runs code stored in it. If you made it yourself, pass {flags}; better, convert it "
                          "once with `ecg-ray data convert FILE.pkl FILE.parquet --trust-pickle FILE.pkl` and use the Parquet file.")
    used = {_same(p) for p in pickles}
    unused = [t for key, t in named.items() if key not in used]
    if unused:
        reads = f"it reads {', '.join(pickles)}" if pickles else "it reads no pickle"
        raise ConfigError(f"--trust-pickle {', '.join(unused)}: {where} does not read that file ({reads}). "
                          "Name exactly the pickle files it reads.")


def record(pickles: Sequence[str]) -> dict[str, str]:
    """What the experiment file records: each pickle's real path -> its SHA-256."""
    return {_same(p): sha256(p) for p in pickles if os.path.isfile(p)}


def check_recorded(pickles: Sequence[str], recorded: dict | None, where: str) -> list[str]:
    """Each pickle holds what it held when the experiment started. Returns warnings (a folder that predates the record)."""
    if recorded is None:
        return [f"{where} records no content hash of its pickle files (an older ecg_ray started it); trusting "
                f"{', '.join(pickles)} by the path you named"] if pickles else []
    for p in pickles:
        key = _same(p)
        if key not in recorded:
            raise ConfigError(f"{where} names the pickle {p}, which its experiment did not start with (it recorded "
                              f"{', '.join(recorded) or 'none'}): the folder was edited. Refusing to load it.")
        if os.path.isfile(p) and sha256(p) != recorded[key]:
            raise ConfigError(f"The pickle {p} changed since {where} started (SHA-256 {recorded[key][:12]}... recorded, "
                              f"{sha256(p)[:12]}... now): it is not the file that was trusted. Start a new experiment "
                              "with the new file, or restore the old one.")
    return []
