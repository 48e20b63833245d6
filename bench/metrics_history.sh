#!/usr/bin/env bash
# /metrics with a year of history: a one-minute health check's year of runs
# (525,600 rows) in the state database, then the daemon's scrape time.
#
#   bench/metrics_history.sh [ROWS]     (DRCTL_BIN=... to use a built binary)
#
# Prints the median and worst of 20 scrapes, and the same after the hourly
# prune (`history = "90d"`) has run, next to the state file's size.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-525600}
if [ -z "${DRCTL_BIN:-}" ]; then cargo build --release --quiet; DRCTL_BIN="$PWD/target/release/drctl"; fi
tmp=$(mktemp -d /tmp/drctl-bench-metrics.XXXXXX)
dpid=; trap '[ -n "$dpid" ] && kill $dpid 2>/dev/null 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/drctl.toml" <<TOML
state_dir = "$tmp/state"
[http]
listen = "127.0.0.1:$port"
[jobs.hc]
type = "health"
schedule = "0 0 1 1 *"
checks = [{ name = "api", type = "tcp", address = "127.0.0.1:9" }]
TOML
"$DRCTL_BIN" -c "$tmp/drctl.toml" status >/dev/null
python3 - "$tmp/state/state.db" "$ROWS" <<'PY'
import sqlite3, sys, datetime
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=n)
rows = []
for i in range(n):
    t = (start + datetime.timedelta(minutes=i)).isoformat()
    rows.append(("hc", "health", "bench", "schedule", t, t, "succeeded" if i % 50 else "failed"))
c.executemany("INSERT INTO runs (job, kind, host, trigger, started_at, finished_at, status) VALUES (?,?,?,?,?,?,?)", rows)
c.commit()
PY
echo "state file with $ROWS runs: $(du -h "$tmp/state/state.db" | cut -f1)"
scrape() {
  for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/metrics"; done |
    sort -n | python3 -c 'import sys; v=[float(x)*1000 for x in sys.stdin]; print(f"median {v[len(v)//2]:.1f} ms, worst {v[-1]:.1f} ms")'
}
DRCTL_LOG=warn "$DRCTL_BIN" -c "$tmp/drctl.toml" daemon 2>"$tmp/daemon.log" &
dpid=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.2; done
curl -s "http://127.0.0.1:$port/metrics" | grep '^drctl_job_runs_total{job_name="hc",outcome="succeeded"}'
count() { python3 -c "import sqlite3; print(sqlite3.connect('$tmp/state/state.db', timeout=30).execute('select count(*) from runs').fetchone()[0])"; }
echo "scrape with $(count) runs in the state file:"
scrape
for _ in $(seq 1 120); do [ "$(count)" -lt "$ROWS" ] && break; sleep 0.5; done
echo "scrape after the daemon's hourly prune (history = 90d, it runs at start), $(count) runs kept:"
scrape
