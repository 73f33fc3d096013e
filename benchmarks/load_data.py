"""How long data preparation takes at the challenge's size (8528 records), cold and cached.

    python benchmarks/load_data.py [--records 8528]

Writes the synthetic records in the CinC 2017 layout (.mat + .hea + REFERENCE.csv)
into a temporary folder, then times each stage and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import write_challenge  # noqa: E402

from ecg_ray.config import load_experiment  # noqa: E402
from ecg_ray.data.prepare import prepare  # noqa: E402
from ecg_ray.data.synthetic import generate  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=8528)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records, t = timed(lambda: generate(args.records, seed=42))
        rows.append(("generate synthetic records", t))
        rs = records
        rs.ids = [f"A{i:05d}" for i in range(len(rs))]
        _, t = timed(lambda: write_challenge(tmp / "training2017", rs))
        rows.append(("write challenge layout (setup)", t))
        for source, path in (("synthetic", None), ("cinc2017", str(tmp / "training2017"))):
            overrides = {"data.source": source, "data.path": path, "data.n_records": args.records, "data.cache_dir": str(tmp / "cache")}
            cfg = load_experiment(None, **overrides)
            data, t = timed(lambda: prepare(cfg))
            rows.append((f"prepare {source}, cold (read, check, split, pad, cache write)", t))
            _, t = timed(lambda: prepare(cfg))
            rows.append((f"prepare {source}, cached", t))
    print(f"{args.records} records, {sum(len(v) for v in data.ids.values())} prepared, "
          f"{sum(a.nbytes for a in data.x.values()) / 2**20:.0f} MiB float32\n")
    print(f"| {'stage':<62} | seconds |\n|{'-' * 64}|---------:|")
    for name, seconds in rows:
        print(f"| {name:<62} | {seconds:7.2f} |")


if __name__ == "__main__":
    main()
