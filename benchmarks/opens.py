"""Count what one `ecg-ray` command opens for reading in an experiment folder, per file, in the driver.

    python benchmarks/opens.py ~/ecg_ray_results/quick -- tune --resume ~/ecg_ray_results/quick
    python benchmarks/opens.py /tmp/r/quick -- tune experiments/quick.yaml --storage /tmp/r

Wraps Python's `open` in this process (the driver), runs the command, and prints, per file name
under FOLDER (trial folders and checkpoints folded together), the most times any one such file was
opened for reading. It sees every open, through ecg_ray's storage layer or not; Ray's workers are
other processes and are not counted. (`strace -f -e trace=openat` lost events across Ray's threads
on a 2-core machine, so the count is taken here.) Needs only the README's install.
"""

from __future__ import annotations

import atexit
import builtins
import collections
import io
import os
import re
import runpy
import sys


def main() -> None:
    if "--" not in sys.argv[2:] or len(sys.argv) < 4:
        sys.exit(__doc__)
    folder = os.path.abspath(os.path.expanduser(sys.argv[1]))
    command = sys.argv[sys.argv.index("--") + 1:]
    counts: collections.Counter = collections.Counter()
    real_open = io.open

    def counting_open(file, mode="r", *args, **kwargs):
        path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if isinstance(path, str) and path.startswith(folder) and "r" in mode and "+" not in mode:
            counts[path] += 1
        return real_open(file, mode, *args, **kwargs)

    def report() -> None:
        most: collections.Counter = collections.Counter()
        for path, n in counts.items():
            rel = re.sub(r"checkpoint_[^/]+", "checkpoint_*", path[len(folder):].lstrip("/"))
            rel = re.sub(r"^trial_driver_[^/]+", "<trial>", rel)
            most[rel] = max(most[rel], n)
        print(f"\nopens for reading under {folder} (the most for any one file of each name):", file=sys.stderr)
        for rel, n in sorted(most.items()):
            print(f"{n:4d}  {rel}", file=sys.stderr)

    builtins.open = io.open = counting_open
    atexit.register(report)
    sys.argv = ["ecg-ray", *command]
    runpy.run_module("ecg_ray.commands.main", run_name="__main__")


if __name__ == "__main__":
    main()
