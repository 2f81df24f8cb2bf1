#!/usr/bin/env bash
# Times the README's main job from a cold cache (the latency table is measured first, as on a new machine):
#     bash bench/main_job.sh
# and prints its wall time against the 5-minute target.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export ONESHOT_CACHE="$scratch/cache"
SECONDS=0
python -m search.evolve --latency-ms 10 --out "$scratch/evolve" "$@"
echo "main job: ${SECONDS} s wall from a cold cache (target 300 s: $(( SECONDS * 100 / 300 ))% of it)"
