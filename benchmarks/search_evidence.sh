#!/usr/bin/env bash
# Issue 10's evidence: the notebook's grid against the extended (Optuna) search on a real sample,
# each searched with one seed, then its top 2 configs at seeds 42, 43, 44 (`ecg-ray repeat`).
#
#   bash benchmarks/search_evidence.sh ../shared/data/cinc2017-sample [STORAGE]   # ~50 min on 2 CPU cores
#
# Needs only the README's install. Prints `ecg-ray compare` of both repeats (mean +- sd over seeds, paired by seed).
set -euo pipefail
sample=${1:?usage: search_evidence.sh CINC2017_FOLDER [STORAGE]}
storage=${2:-${TMPDIR:-/tmp}/ecg_ray_search_evidence}
here=$(cd "$(dirname "$0")" && pwd)
for search in grid extended; do
  ecg-ray tune "$here/search_evidence/$search.yaml" --data "$sample" --storage "$storage" --overwrite --format csv markdown
  ecg-ray repeat "$storage/evidence_$search" --top 2 --seeds 3 --overwrite --format csv markdown
done
# Both repeats ran on the same records and split, so `ecg-ray compare` pairs them by seed: each one's
# top 2 configs with mean, CI and cost, the difference of their best configs with its paired t-test,
# and one page (index.html) with their learning curves overlaid.
ecg-ray compare "$storage/evidence_grid_top2x3" "$storage/evidence_extended_top2x3" --top 2 \
  --out "$storage/evidence_compare" --format csv markdown latex
