#!/usr/bin/env bash
# The replay grid of the README's "Which backend to pick": every workload shape at 1%, 5%, 10%
# and 25% of its working set, each backend beside exact LRU, S3-FIFO, SIEVE and Belady's OPT,
# as a Markdown table on stdout. The last two columns are the default policy of rwlock and
# sharded (adaptive) against exact LRU and against the best of LRU, S3-FIFO and SIEVE, in
# points; a row where adaptive is below LRU, or more than 1 point below the best, is marked.
#
#   scripts/eviction-grid.sh                       # 10,000 keys, 300,000 requests, 4KiB, seed 1
#   KEYS=100000 REQUESTS=1000000 SEED=7 SIZE=lognormal:16KiB,1.5 scripts/eviction-grid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-10000}
REQUESTS=${REQUESTS:-300000}
SEED=${SEED:-1}
SIZE=${SIZE:-4KiB}
WORKLOADS=${WORKLOADS:-"zipf:0.6 zipf:0.8 zipf:1.0 zipf:1.2 scan:1.0 shift:1.0 drift:1.0 loop reread"}
cargo build --release --quiet
bin=target/release/cachet
echo "| workload | capacity | adaptive | clock | moka | lru | s3fifo | sieve | opt | adaptive − lru | adaptive − best |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for w in $WORKLOADS; do
  "$bin" bench sim --workload "$w" --keys "$KEYS" --requests "$REQUESTS" --seed "$SEED" \
    --size "$SIZE" --backend rwlock,moka --eviction adaptive,clock --json |
    python3 -c '
import json, sys
report = json.load(sys.stdin)
rows = {}
for r in report["results"]:
    name = r["backend"] if r["backend"] != "rwlock" else "rwlock-" + r["policy"]
    rows.setdefault(r["capacity"], {})[name] = 100 * r["hit_ratio"]
for cap, v in rows.items():
    a = v["rwlock-adaptive"]
    best = max(v["lru"], v["s3fifo"], v["sieve"])
    mark = "" if a >= v["lru"] and a >= best - 1 else " ✗"
    cells = [v[k] for k in ("rwlock-adaptive", "rwlock-clock", "moka", "lru", "s3fifo", "sieve", "opt")]
    workload, lru = report["workload"], v["lru"]
    print(f"| {workload} | {cap} | " + " | ".join(f"{c:.2f}" for c in cells)
          + f" | {a - lru:+.2f} | {a - best:+.2f}{mark} |")
'
done
