#!/usr/bin/env bash
# Issue 10's evidence: the notebook's grid against the extended (Optuna) search on a real sample,
# each searched with one seed, then its top 2 configs at seeds 42, 43, 44 (`ecg-ray repeat`).
#
#   bash benchmarks/search_evidence.sh ../shared/data/cinc2017-sample [STORAGE]   # ~50 min on 2 CPU cores
#
# Needs only the README's install. Prints both repeats' configs tables (mean +- sd over seeds).
set -euo pipefail
sample=${1:?usage: search_evidence.sh CINC2017_FOLDER [STORAGE]}
storage=${2:-${TMPDIR:-/tmp}/ecg_ray_search_evidence}
here=$(cd "$(dirname "$0")" && pwd)
for search in grid extended; do
  ecg-ray tune "$here/search_evidence/$search.yaml" --data "$sample" --storage "$storage" --overwrite --format csv markdown
  ecg-ray repeat "$storage/evidence_$search" --top 2 --seeds 3 --overwrite --format csv markdown
done
for search in grid extended; do
  echo "== $search: the top 2 configs at 3 seeds ($storage/evidence_${search}_top2x3/report/configs.md)"
  python3 - "$storage/evidence_${search}_top2x3/report/configs.csv" <<'PY'
import sys

import pandas as pd

c = pd.read_csv(sys.argv[1])
cols = ["rank", "lr", "hidden_size", "dropout", "n_seeds", "best_val_macro_f1_mean", "best_val_macro_f1_sd",
        "best_val_macro_f1_ci_low", "best_val_macro_f1_ci_high", "val_challenge_f1_mean"]
print(c[cols].round(4).to_string(index=False))
PY
done
