#!/usr/bin/env bash
# rate_limit: an incompressible files backup (SIZE_MIB, default 60) into a
# local repository with rate_limit = "2MiB/s" (a 30 s window), and the same
# backup with no limit and with a limit far above the disk's speed (what the
# limiter itself costs). Prints throughput against the limit.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-60}
cargo build --release --quiet
tmp=$(mktemp -d /tmp/drctl-rate.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$tmp/src/blob"
# seconds for one backup with `rate_limit = $2` (none when empty)
run() {
  local cfg="$tmp/$1.toml"
  {
    echo "state_dir = \"$tmp/state-$1\""
    echo "[repositories.r]"; echo 'type = "local"'; echo "path = \"$tmp/repo-$1\""
    if [ -n "$2" ]; then echo "rate_limit = \"$2\""; fi
    echo "[jobs.blob]"; echo 'type = "files"'; echo "paths = [\"$tmp/src\"]"
    echo 'repository = "r"'; echo 'compression = "none"'
  } > "$cfg"
  local s e
  s=$(date +%s.%N)
  DRCTL_LOG=warn ./target/release/drctl -c "$cfg" run blob > /dev/null
  e=$(date +%s.%N)
  python3 -c "print($e - $s)"
}
unlimited=$(run none "")
huge=$(run huge "100GiB/s")
limited=$(run limited "2MiB/s")
python3 - <<PY
size = $SIZE_MIB
lim, unl, huge = $limited, $unlimited, $huge
print(f"rate_limit 2MiB/s: {size} MiB in {lim:.2f} s = {size/lim:.3f} MiB/s ({(size/lim)/2*100:.1f}% of the limit)")
print(f"no limit: {unl:.2f} s ({size/unl:.0f} MiB/s); limit far above the disk: {huge:.2f} s ({huge/unl:.2f}x the unlimited run)")
PY
