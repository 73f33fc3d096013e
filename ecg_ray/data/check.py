"""`ecg-ray data check`: what a user wants to know about a data source before a long run.

    ecg-ray data check ../shared/data/cinc2017-sample
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ecg_ray.data.prepare import read_checked, split_records
from ecg_ray.errors import DataError
from ecg_ray.data.records import RecordSet
from ecg_ray.schema import LABEL_NAMES
from ecg_ray.data.sources import PICKLE_WARNING


def _counts(rs: RecordSet) -> str:
    return "  ".join(f"{n}={c}" for n, c in zip(LABEL_NAMES, rs.class_counts()))


def check_report(exp) -> tuple[str, bool]:
    """(text to print, True when no problem was found) for the data of an experiment config."""
    d = exp.data
    lines = [f"Source: {d.source}" + (f" {d.path}" if d.path else "") + (f" + {d.val_path}" if d.val_path else "")]
    if d.source == "pickle":
        lines.append(f"Warning: {PICKLE_WARNING}")
    # Collect every problem instead of stopping at the first.
    sets, dropped = read_checked(replace(exp, data=replace(d, on_bad_record="skip")))
    everything = RecordSet.concat(list(sets.values()))
    lengths = everything.lengths()
    lines.append(f"Records: {len(everything)} usable ({_counts(everything)}), sampling rate {everything.fs} Hz")
    for name, rs in sets.items():
        if name != "all":
            lines.append(f"  given {name} split: {len(rs)} ({_counts(rs)})")
    if len(everything):
        amp = np.concatenate([np.asarray(s, dtype=np.float64) for s in everything.signals])
        pct = np.percentile(lengths, [5, 50, 95]).astype(int)
        lines += [
            f"Lengths (samples): min {lengths.min()}, 5% {pct[0]}, median {pct[1]}, 95% {pct[2]}, max {lengths.max()} "
            f"({lengths.min() / everything.fs:.1f}-{lengths.max() / everything.fs:.1f} s)",
            f"At target_length={d.target_length}: {(lengths < d.target_length).sum()} padded with zeros, "
            f"{(lengths == d.target_length).sum()} exact, {(lengths > d.target_length).sum()} centre-trimmed",
            f"Amplitude (ADC units, 1000 per mV): min {amp.min():.0f}, 1% {np.percentile(amp, 1):.0f}, "
            f"99% {np.percentile(amp, 99):.0f}, max {amp.max():.0f}",
        ]
        try:
            splits = split_records(sets, d, exp.seed)
            for name, rs in splits.items():
                lines.append(f"Split {name}: {len(rs)} ({_counts(rs)})")
            if (splits["train"].class_counts() == 0).any():
                raise DataError("the training split lacks a class; class weights would divide by zero")
        except DataError as err:
            dropped.append(("split", "-", str(err)))
    lines.append(f"Problems: {len(dropped)}" + ("" if dropped else " (none)"))
    lines += [f"  - {p}" for _, _, p in dropped]
    if dropped:
        lines.append("Fix the problems above, or set `on_bad_record: skip` under `data:` to drop those records.")
    return "\n".join(lines), not dropped
