#!/usr/bin/env bash
# Idle daemon cost: 10 scheduled jobs (none due) with an RPO each (so the
# RPO worker lists the repository every minute per job), an alert channel
# and the outbox worker, the fleet view (its status checked every minute,
# rewritten on change or every 5 min; fleet_stale reads every host's status
# every minute), N idle minutes (default 5).
# Prints peak RSS and CPU seconds per idle minute (targets: <= 25 MiB, <= 0.1 s/min).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-5}
cargo build --release --quiet
tmp=$(mktemp -d /tmp/drctl-idle.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  echo "state_dir = \"$tmp/state\""
  echo "fleet_stale = \"15m\""
  echo "[http]"; echo "listen = \"127.0.0.1:$port\""
  echo "[repositories.local]"; echo "type = \"local\""; echo "path = \"$tmp/repo\""
  for i in $(seq 1 10); do
    echo "[jobs.job$i]"; echo "type = \"files\""; echo "paths = [\"/etc/hostname\"]"
    echo "repository = \"local\""; echo "schedule = \"0 0 3 1 1 *\""; echo "catch_up = false"
    echo "rpo = \"26h\""
  done
  echo "[alerts.channels.hook]"; echo "type = \"webhook\""; echo "url = \"http://127.0.0.1:9/none\""
} > "$tmp/drctl.toml"
DRCTL_LOG=warn ./target/release/drctl -c "$tmp/drctl.toml" daemon &
pid=$!
sleep 5
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }
start=$(cpu)
sleep $((MINUTES * 60))
end=$(cpu)
curl -sf "http://127.0.0.1:$port/metrics" > /dev/null || python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/metrics').read()"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
# What the RSS is made of: anonymous memory (heap, stacks) against clean
# pages of the binary itself (page cache, reclaimable, never swapped).
anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
file=$(awk '/^RssFile/ {print $2}' "/proc/$pid/status")
python3 - <<PY
cpu = $end - $start
print(f"idle daemon, 10 jobs, {$MINUTES} min: RSS {$rss/1024:.1f} MiB (peak {$hwm/1024:.1f} MiB), "
      f"CPU {cpu:.2f} s total = {cpu/$MINUTES:.3f} s per idle minute (targets: <= 25 MiB, <= 0.1 s/min)")
print(f"  of the RSS: {$anon/1024:.1f} MiB anonymous (heap, stacks), {$file/1024:.1f} MiB file pages (mostly the binary's own code)")
PY
