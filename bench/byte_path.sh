#!/usr/bin/env bash
# drctl's byte path against the plain pipelines it replaces, side by side,
# on the database the typed-core issue names: `pgbench -i -s SCALE` plus a
# table of ROWS rows of md5 text and jsonb.
#
#   bench/byte_path.sh [SCALE] [ROWS] [ROUNDS]     (default 50 1500000 2)
#
# Interleaved rounds, both orders, a CHECKPOINT and a page-cache drop (when
# root) between measurements:
#   backup : drctl run (local repository)  vs pg_dump -Fc -Z0 > /dev/null
#                                          vs pg_dump -Fc -Z0 | zstd -1 > file
#   restore: drctl restore --latest -j2    vs pg_restore -j2 from a local -Fc file
# then one strace -c -f of drctl run and of the pipeline, and of drctl
# restore and pg_restore -j2 (futex, epoll_wait, read, write counts).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-50}
ROWS=${2:-1500000}
ROUNDS=${3:-2}
cargo build --release --quiet
drctl="$PWD/target/release/drctl"
tmp=$(mktemp -d /tmp/drctl-bytes.XXXXXX); chmod 777 "$tmp"
. bench/cluster.sh
export PGOPTIONS="-c client_min_messages=warning"

echo "building pgbench -s $SCALE and $ROWS rows of md5/jsonb ..."
q postgres "CREATE DATABASE bench"
pgbench -q -i -s "$SCALE" bench >/dev/null 2>&1
q bench "CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, meta jsonb NOT NULL)"
q bench "INSERT INTO docs SELECT g, md5(g::text) || md5((g * 7)::text) || md5(random()::text),
           jsonb_build_object('n', g, 'tag', md5((g % 1000)::text), 'at', now() - g * interval '1 second')
         FROM generate_series(1, $ROWS) g"
q bench "VACUUM ANALYZE"
echo "database: $(q postgres "SELECT pg_size_pretty(pg_database_size('bench'))"); cores: $(nproc)"
cat > "$tmp/drctl.toml" <<TOML
state_dir = "$tmp/state"
[repositories.local]
type = "local"
path = "$tmp/repo"
[jobs.bench]
type = "postgres"
url = "$base/bench"
repository = "local"
globals = false
TOML
settle() { q postgres "CHECKPOINT"; sync; [ "$(id -u)" = 0 ] && echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
pg_dump -Fc -Z0 -d bench > "$tmp/bench.dump"

declare -a RAW PIPE RUN PGR DRR
for r in $(seq 1 "$ROUNDS"); do
  order=(raw pipe run); [ $((r % 2)) = 0 ] && order=(run pipe raw)
  for what in "${order[@]}"; do
    settle
    case $what in
      raw)  RAW+=("$(t sh -c "pg_dump -Fc -Z0 -d bench > /dev/null")") ;;
      pipe) PIPE+=("$(t sh -c "pg_dump -Fc -Z0 -d bench | zstd -q -1 -T1 > $tmp/pipe.zst")"); rm -f "$tmp/pipe.zst" ;;
      run)  RUN+=("$(t sh -c "'$drctl' -c '$tmp/drctl.toml' run bench > /dev/null 2>&1")") ;;
    esac
  done
  order=(pgr drr); [ $((r % 2)) = 0 ] && order=(drr pgr)
  for what in "${order[@]}"; do
    q postgres "DROP DATABASE IF EXISTS r_target"; q postgres "CREATE DATABASE r_target TEMPLATE template0"
    settle
    case $what in
      pgr) PGR+=("$(t pg_restore -j2 -d "$base/r_target" "$tmp/bench.dump")") ;;
      drr) q postgres "DROP DATABASE r_target"
           DRR+=("$(t sh -c "'$drctl' -c '$tmp/drctl.toml' restore --latest --job bench --jobs 2 --to '$base/r_target' > /dev/null 2>&1")") ;;
    esac
  done
  echo "round $r: raw ${RAW[-1]} pipe ${PIPE[-1]} run ${RUN[-1]} | pg_restore ${PGR[-1]} drctl restore ${DRR[-1]}"
done

sum() { python3 -c "import sys; print(f'{sum(map(float, sys.argv[1:])):.2f}')" "$@"; }
raw=$(sum "${RAW[@]}"); pipe=$(sum "${PIPE[@]}"); run=$(sum "${RUN[@]}"); pgr=$(sum "${PGR[@]}"); drr=$(sum "${DRR[@]}")
echo
echo "| $ROUNDS rounds, seconds summed | seconds | drctl vs this |"
echo "| --- | --- | --- |"
echo "| pg_dump -Fc -Z0 > /dev/null | $raw | $(ratio "$run" "$raw") |"
echo "| pg_dump -Fc -Z0 \| zstd -1 > file | $pipe | $(ratio "$run" "$pipe") (target <= 1.05x) |"
echo "| drctl run (zstd -1, sha256, archive check, row counts, fsync) | $run | |"
echo "| pg_restore -j2 from a local -Fc file | $pgr | $(ratio "$drr" "$pgr") (target <= 1.15x) |"
echo "| drctl restore --latest --jobs 2 | $drr | |"

if command -v strace >/dev/null 2>&1; then
  calls() { awk '$NF ~ /^(futex|epoll_wait|read|write)$/ {printf "%s %s, ", $NF, $4}' "$1"; }
  strace -f -c -o "$tmp/run.strace" "$drctl" -c "$tmp/drctl.toml" run bench >/dev/null 2>&1
  strace -f -c -o "$tmp/pipe.strace" sh -c "pg_dump -Fc -Z0 -d bench | zstd -q -1 -T1 > $tmp/pipe.zst"
  q postgres "DROP DATABASE IF EXISTS r_target"
  strace -f -c -o "$tmp/restore.strace" "$drctl" -c "$tmp/drctl.toml" restore --latest --job bench --jobs 2 --to "$base/r_target" >/dev/null 2>&1
  q postgres "DROP DATABASE IF EXISTS r_target"; q postgres "CREATE DATABASE r_target TEMPLATE template0"
  strace -f -c -o "$tmp/pgr.strace" pg_restore -j2 -d "$base/r_target" "$tmp/bench.dump"
  echo
  echo "syscalls, drctl run (its children included): $(calls "$tmp/run.strace")"
  echo "syscalls, pg_dump | zstd: $(calls "$tmp/pipe.strace")"
  echo "syscalls, drctl restore --jobs 2 (its children included): $(calls "$tmp/restore.strace")"
  echo "syscalls, pg_restore -j2: $(calls "$tmp/pgr.strace")"
fi
