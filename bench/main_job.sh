#!/usr/bin/env bash
# Times the README's main job from a cold cache (the latency table is measured first, as on a new machine),
# then again with the table cached (a fresh output folder, so nothing else is reused):
#     bash bench/main_job.sh [more search.evolve flags]
# and prints both wall times against the targets (issue 18: 120 s cold, 20 s cached).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export ONESHOT_CACHE="$scratch/cache"
SECONDS=0
python -m search.evolve --latency-ms 10 --out "$scratch/cold" "$@"
cold=$SECONDS
SECONDS=0
python -m search.evolve --latency-ms 10 --out "$scratch/cached" "$@"
cached=$SECONDS
echo "main job: ${cold} s wall from a cold cache (target 120 s: $(( cold * 100 / 120 ))% of it), ${cached} s with the" \
     "table cached (target 20 s: $(( cached * 100 / 20 ))% of it)"
