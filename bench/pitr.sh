#!/usr/bin/env bash
# Point-in-time recovery, side by side on one cluster, one run:
#
#   bench/pitr.sh [SCALE] [MINUTES]     (default 50 10)
#
#   base backup : drctl run (postgres_physical, zstd -1, local repository)
#                 vs pg_basebackup -Ft -X fetch to a local file
#                 vs pgBackRest full backup (compress-type=zst, process-max=2),
#                    when pgbackrest is installed (Debian package pgbackrest)
#   write load  : pgbench for MINUTES at a steady rate; meanwhile the WAL
#                 reaches drctl twice (archive_command: drctl wal push and
#                 pgbackrest archive-push; and a second job with
#                 wal = "stream") and `drctl rpo` is sampled every second
#   restore     : to a point MINUTES after the base backup (the end of the
#                 load less 10 s): drctl restore --at ... --to-datadir, then
#                 pg_ctl start until read-write, vs pgbackrest restore
#                 --type=time plus start until read-write (recovery and
#                 promotion included)
#
# Everything runs as the postgres user when root (archive_command does).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-50}
MINUTES=${2:-10}
cargo build --release --quiet
drctl="$PWD/target/release/drctl"
tmp=$(mktemp -d /tmp/drctl-pitr.XXXXXX); chmod 777 "$tmp"
. bench/cluster.sh
export PGOPTIONS="-c client_min_messages=warning"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PATH="$PATH" "$@"; else "$@"; fi; }
pgbr=$(command -v pgbackrest || true)

mkdir -p "$tmp/world"
cat > "$tmp/world/drctl.toml" <<TOML
state_dir = "$tmp/world/state"
[repositories.local]
type = "local"
path = "$tmp/world/repo"
[jobs.pitr]
type = "postgres_physical"
url = "postgres://postgres@127.0.0.1:$port/postgres"
repository = "local"
rpo = "5m"
[jobs.stream]
type = "postgres_physical"
url = "postgres://postgres@127.0.0.1:$port/postgres"
repository = "local"
wal = "stream"
wal_flush = "5s"
rpo = "1m"
TOML
if [ -n "$pgbr" ]; then
  cat > "$tmp/pgbackrest.conf" <<CONF
[global]
repo1-path=$tmp/pgbr
compress-type=zst
compress-level=1
process-max=2
log-level-console=warn
start-fast=y
[bench]
pg1-path=$tmp/data
pg1-port=$port
pg1-socket-path=$tmp
CONF
  archive="$drctl -c $tmp/world/drctl.toml -q wal push --job pitr %p && $pgbr --stanza=bench archive-push %p"
  export PGBACKREST_CONFIG="$tmp/pgbackrest.conf"
else
  archive="$drctl -c $tmp/world/drctl.toml -q wal push --job pitr %p"
fi
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$tmp"
q postgres "ALTER SYSTEM SET archive_mode = on"
q postgres "ALTER SYSTEM SET archive_command = '$archive'"
q postgres "ALTER SYSTEM SET archive_timeout = 60"
q postgres "ALTER SYSTEM SET wal_level = replica"
run_pg pg_ctl restart -w -D "$tmp/data" >/dev/null
[ -n "$pgbr" ] && as_pg "$pgbr" --stanza=bench stanza-create >/dev/null

echo "building pgbench -s $SCALE ..."
q postgres "CREATE DATABASE bench"
pgbench -q -i -s "$SCALE" bench >/dev/null 2>&1
q bench "CHECKPOINT"
echo "cluster: $(q postgres "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database"); cores: $(nproc)"

dr() { as_pg "$drctl" -c "$tmp/world/drctl.toml" -q "$@"; }
do_bb() { run_pg pg_basebackup -D - -Ft -X fetch -d "$base/postgres" > "$tmp/basebackup.tar"; }
do_dr() { dr run pitr >/dev/null; }
do_br() { as_pg "$pgbr" --stanza=bench --type=full backup; }
echo "base backups ..."
t_bb=$(t do_bb)
t_dr=$(t do_dr)
t_br=""
[ -n "$pgbr" ] && t_br=$(t do_br)
dr run stream >/dev/null
base_done=$(date -u +%s)
echo "  pg_basebackup -Ft to a file: $t_bb s; drctl run: $t_dr s (stored $(du -sh "$tmp/world/repo/pitr" | cut -f1)); pgBackRest full: ${t_br:-n/a} s"

echo "steady writes for $MINUTES min (pgbench -c 2 -R 100), the daemon streaming ..."
as_pg "$drctl" -c "$tmp/world/drctl.toml" -q daemon > "$tmp/daemon.log" 2>&1 &
daemon=$!
sleep 5
pgbench -c 2 -R 100 -T $((MINUTES * 60)) bench >/dev/null 2>&1 &
load=$!
: > "$tmp/rpo.tsv"
while kill -0 $load 2>/dev/null; do
  dr rpo --json 2>/dev/null | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(r["job"], r.get("age_seconds") or 0)' >> "$tmp/rpo.tsv" || true
  sleep 1
done
wait $load || true
end=$(date -u +%s)
target=$(date -u -d "@$((end - 10))" +"%Y-%m-%d %H:%M:%S+00")
q postgres "SELECT pg_switch_wal()" >/dev/null
sleep 15
pkill -f "drctl.toml -q daemon" || true
wait $daemon || true
python3 - "$tmp/rpo.tsv" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    job, age = line.split()
    rows.setdefault(job, []).append(float(age))
for job, ages in sorted(rows.items()):
    ages.sort()
    p95 = ages[int(len(ages) * 0.95) - 1] if ages else 0
    print(f"  RPO age of {job}: median {statistics.median(ages):.1f} s, p95 {p95:.1f} s, max {max(ages):.1f} s ({len(ages)} samples)")
PY
echo "  WAL stored: $(du -sh "$tmp/world/repo/pitr/wal" | cut -f1) (archive_command), $(du -sh "$tmp/world/repo/stream/wal" | cut -f1) (stream)"

echo "restores to $target ($(( (end - 10 - base_done) / 60 )) min after the base backup) ..."
start_rw() {
  run_pg pg_ctl start -w -t 3600 -D "$1" -l "$1.log" -o "-c port=$2 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$tmp -c archive_mode=off" >/dev/null
  until [ "$(psql -X -At -h 127.0.0.1 -p "$2" -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.2; done
}
p1=$((port + 1)); p2=$((port + 2))
do_drr() { dr restore --job pitr --at "$target" --to-datadir "$tmp/r-drctl" >/dev/null && start_rw "$tmp/r-drctl" $p1; }
do_brr() { as_pg "$pgbr" --stanza=bench --pg1-path="$tmp/r-pgbr" --type=time "--target=$target" --target-action=promote restore && start_rw "$tmp/r-pgbr" $p2; }
t_drr=$(t do_drr)
rows_dr=$(psql -X -At -h 127.0.0.1 -p $p1 -d bench -c "SELECT count(*) FROM pgbench_history")
run_pg pg_ctl stop -m fast -D "$tmp/r-drctl" >/dev/null
echo "  drctl restore --at + start: $t_drr s ($rows_dr history rows)"
if [ -n "$pgbr" ]; then
  mkdir -p "$tmp/r-pgbr"; chmod 700 "$tmp/r-pgbr"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$tmp/r-pgbr"
  t_brr=$(t do_brr)
  rows_br=$(psql -X -At -h 127.0.0.1 -p $p2 -d bench -c "SELECT count(*) FROM pgbench_history")
  run_pg pg_ctl stop -m fast -D "$tmp/r-pgbr" >/dev/null
  echo "  pgbackrest restore --type=time + start: $t_brr s ($rows_br history rows)"
fi

echo
echo "| | seconds | drctl vs this |"
echo "| --- | --- | --- |"
echo "| base backup: pg_basebackup -Ft -X fetch > file | $t_bb | $(ratio "$t_dr" "$t_bb") |"
[ -n "$t_br" ] && echo "| base backup: pgBackRest full (zst, process-max=2) | $t_br | $(ratio "$t_dr" "$t_br") |"
echo "| **base backup: drctl run** | $t_dr | |"
[ -n "$pgbr" ] && echo "| restore to a point + start until read-write: pgbackrest | $t_brr | $(ratio "$t_drr" "$t_brr") |"
echo "| **restore to a point + start until read-write: drctl** | $t_drr | |"
