#!/usr/bin/env bash
# prune_files against the cron line it replaces (R4):
#   find DIR -name "*.log" -mtime +30 -delete
# on a tree of N files (default 100000) in 200 directories with mtimes
# spread over 60 days. Both get an identical copy (cp -a keeps mtimes).
# drctl does more per file (keep_last per directory, the open-for-writing
# scan of /proc, symlink checks), so the ratio is the price of those.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
cargo build --release --quiet
tmp=$(mktemp -d /tmp/drctl-prune-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/tree" "$N" <<'PY'
import os, random, sys, time
root, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
now = time.time()
for i in range(n):
    d = os.path.join(root, f"app{i % 200}")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"f{i}.log")
    with open(p, "w") as f:
        f.write("x" * 100)
    t = now - random.uniform(0, 60) * 86400
    os.utime(p, (t, t))
PY
cp -a "$tmp/tree" "$tmp/find"
cp -a "$tmp/tree" "$tmp/drctl"
cat > "$tmp/drctl.toml" <<TOML
state_dir = "$tmp/state"
[jobs.logs]
type = "prune_files"
paths = ["$tmp/drctl/**/*.log"]
older_than = "30d"
TOML
sync
t0=$(date +%s.%N)
find "$tmp/find" -name "*.log" -mtime +30 -delete
t1=$(date +%s.%N)
DRCTL_LOG=warn ./target/release/drctl -c "$tmp/drctl.toml" run logs > /dev/null
t2=$(date +%s.%N)
left_find=$(find "$tmp/find" -type f | wc -l)
left_drctl=$(find "$tmp/drctl" -type f | wc -l)
python3 - "$t0" "$t1" "$t2" "$N" "$left_find" "$left_drctl" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:4])
n, lf, ld = sys.argv[4:7]
f, d = t1 - t0, t2 - t1
print(f"files: {n}; left by find: {lf}, by drctl: {ld}")
print(f"find -mtime +30 -delete: {f:.2f} s")
print(f"drctl run (prune_files): {d:.2f} s  ({d / f:.2f}x find)")
PY
