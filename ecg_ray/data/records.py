"""The in-memory form every data source produces: ids, raw signals, labels."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ecg_ray.schema import LABEL_NAMES, NUM_CLASSES


@dataclass
class RecordSet:
    """Labelled variable-length records from one source.

    Attributes:
        ids: record ids, unique.
        signals: 1-D float arrays in ADC units (1000 per mV), one per record.
        labels: int64 class per record, 0..3 (N, A, O, ~).
        fs: sampling rate in Hz.
        source: where the records came from (a path or a generator spec).
        problems: (record id, message) for records found bad; ecg_ray.data.prepare raises or drops them.
    """

    ids: list[str]
    signals: list[np.ndarray]
    labels: np.ndarray
    fs: int
    source: str
    problems: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.signals], dtype=np.int64)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=NUM_CLASSES)

    def subset(self, index: np.ndarray) -> "RecordSet":
        """The records at positions `index`, in that order."""
        return RecordSet(
            ids=[self.ids[i] for i in index],
            signals=[self.signals[i] for i in index],
            labels=self.labels[index],
            fs=self.fs,
            source=self.source,
        )

    def file_of(self, record: str) -> str:
        """The file that holds `record`: its .mat in a challenge folder, else the source file."""
        if os.path.isdir(self.source):
            return os.path.join(self.source, f"{record}.mat")
        return self.source

    @classmethod
    def concat(cls, sets: list["RecordSet"]) -> "RecordSet":
        """All records of `sets`, in order (sampling rate and source of the first)."""
        return cls(
            ids=[i for rs in sets for i in rs.ids],
            signals=[s for rs in sets for s in rs.signals],
            labels=np.concatenate([rs.labels for rs in sets]).astype(np.int64),
            fs=sets[0].fs,
            source=sets[0].source,
        )

    def summary(self) -> str:
        counts = ", ".join(f"{n}={c}" for n, c in zip(LABEL_NAMES, self.class_counts()))
        lengths = self.lengths()
        return f"{len(self)} records ({counts}) at {self.fs} Hz, lengths {lengths.min()}-{lengths.max()} from {self.source}"
