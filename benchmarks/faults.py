"""Run every fault scenario against an uninterrupted baseline and print the fault table.

Runs after the README's install command (psutil, which finds a Ray instance's processes, is a runtime dependency).

    python benchmarks/faults.py            # each scenario is one or two short runs of `ecg-ray tune`

Faults: SIGKILL of a trial's Ray Train worker or of its Tune actor; SIGINT and SIGKILL of the driver
followed by `ecg-ray tune --resume`; loss of a worker node in a two-node local
cluster; pickles planted in a copied experiment folder, then --resume and
report; a second `tune` on a folder in use; a damaged result.json, then report.
"Final table identical" compares the ranked table (config and every
metric, not timings or node ids) and every epoch of the history (metrics and
confusion matrix) with the baseline's, exactly.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import faults  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ecg_ray_faults_") as tmp:
        work = Path(tmp)
        baseline = faults.run_baseline(work)
        rows = [scenario(work, baseline).row() for scenario in faults.SCENARIOS.values()]
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)) + " |")


if __name__ == "__main__":
    main()
