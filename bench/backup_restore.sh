#!/usr/bin/env bash
# Backup and restore benchmark against the baselines an operator would use.
#
#   bench/backup_restore.sh [SIZE_GB]      (default 1.2; needs ~4x that free in /tmp)
#
# Builds a database of realistic, poorly compressible rows (uuids, random
# hex, numerics, timestamps, jsonb, random bytea; two indexes), then prints
# wall times and ratios, in one run:
#   backup : drctl run           vs pg_dump -Fc -Z0 > /dev/null, pg_dump -Fc, pg_dump | gzip
#   restore: drctl restore -j2   vs pg_restore -j2 (local -Fc file), gunzip | psql
#   memory : drctl peak RSS on the full database and on a quarter of it
#   trust  : encrypted backup and restore (age) vs plain; verify and verify --deep
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_GB=${1:-1.2}
cargo build --release --quiet
drctl="$PWD/target/release/drctl"
rss="python3 $PWD/bench/peak_rss.py"
tmp=$(mktemp -d /tmp/drctl-bench.XXXXXX); chmod 777 "$tmp"
. bench/cluster.sh

make_db() { # name rows
  q postgres "CREATE DATABASE $1"
  q "$1" "CREATE TABLE payment (
      id bigserial PRIMARY KEY, order_ref uuid NOT NULL, customer text NOT NULL,
      amount numeric(12,2) NOT NULL, currency char(3) NOT NULL, status text NOT NULL,
      created_at timestamptz NOT NULL, card_token text NOT NULL, meta jsonb NOT NULL, signature bytea NOT NULL)"
  q "$1" "INSERT INTO payment (order_ref, customer, amount, currency, status, created_at, card_token, meta, signature)
      SELECT gen_random_uuid(), 'cust-' || (random()*1e7)::int, round((random()*5000)::numeric, 2),
             (ARRAY['EUR','USD','GBP'])[1 + (random()*2)::int], (ARRAY['paid','failed','refunded','pending'])[1 + (random()*3)::int],
             now() - random() * interval '365 days', md5(random()::text) || md5(random()::text),
             jsonb_build_object('ip', format('%s.%s.%s.%s', (random()*255)::int, (random()*255)::int, (random()*255)::int, (random()*255)::int),
                                'ua', md5(random()::text), 'risk', random()),
             decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex')
      FROM generate_series(1, $2)"
  q "$1" "CREATE INDEX ON payment (created_at)"
  q "$1" "VACUUM ANALYZE payment"
}

rows=$(python3 -c "print(int($SIZE_GB * 1024**3 / 330))")
echo "building databases ($rows rows, about ${SIZE_GB} GB) ..."
make_db bench "$rows"
make_db bench_small "$((rows / 4))"
size=$(q postgres "SELECT pg_size_pretty(pg_database_size('bench'))")
size_small=$(q postgres "SELECT pg_size_pretty(pg_database_size('bench_small'))")
echo "database: $size (quarter: $size_small); cores: $(nproc)"

age-keygen -o "$tmp/age.key" 2>/dev/null
recipient=$(age-keygen -y "$tmp/age.key")
cat > "$tmp/drctl.toml" <<TOML
state_dir = "$tmp/state"
[repositories.local]
type = "local"
path = "$tmp/repo"
[jobs.bench]
type = "postgres"
url = "$base/bench"
repository = "local"
[jobs.nocount]
type = "postgres"
url = "$base/bench"
repository = "local"
count_rows_max_table_size = "0B"
[jobs.small]
type = "postgres"
url = "$base/bench_small"
repository = "local"
[jobs.sealed]
type = "postgres"
url = "$base/bench"
repository = "local"
encryption = { recipients = ["$recipient"], identity_file = "$tmp/age.key" }
TOML

echo "backup ..."
raw=$(t sh -c "pg_dump -Fc -Z0 -d bench > /dev/null")
fc=$(t sh -c "pg_dump -Fc -d bench > $tmp/bench.dump")
gz=$(t sh -c "pg_dump -d bench | gzip > $tmp/bench.sql.gz")
zp=$(t sh -c "pg_dump -Fc -Z0 -d bench | zstd -q -1 -T1 > $tmp/bench.dump.zst")
rm -f "$tmp/bench.dump.zst"
read -r drb drb_rss < <($rss "$drctl" -c "$tmp/drctl.toml" run bench)
read -r drnc _ < <($rss "$drctl" -c "$tmp/drctl.toml" run nocount)
read -r _ small_rss < <($rss "$drctl" -c "$tmp/drctl.toml" run small)
read -r drenc drenc_rss < <($rss "$drctl" -c "$tmp/drctl.toml" run sealed)
ver=$(t sh -c "'$drctl' -c '$tmp/drctl.toml' verify --job bench > /dev/null")
verd=$(t sh -c "'$drctl' -c '$tmp/drctl.toml' verify --job sealed --deep > /dev/null")
stored=$(du -sb "$tmp/repo/bench" | cut -f1)
echo "restore ..."
q postgres "CREATE DATABASE r_pg TEMPLATE template0"
pgr=$(t pg_restore -j2 -d r_pg "$tmp/bench.dump"); q postgres "DROP DATABASE r_pg"
q postgres "CREATE DATABASE r_psql TEMPLATE template0"
gzr=$(t sh -c "gunzip -c $tmp/bench.sql.gz | psql -X -q -d $base/r_psql > /dev/null"); q postgres "DROP DATABASE r_psql"
read -r drr drr_rss < <($rss "$drctl" -c "$tmp/drctl.toml" restore --latest --job bench --jobs 2 --to "$base/r_drctl")
read -r dre _ < <($rss "$drctl" -c "$tmp/drctl.toml" restore --latest --job sealed --jobs 2 --to "$base/r_sealed")

mib() { python3 -c "print(f'{$1/1024:.1f} MiB')"; }
echo
echo "| backup of $size | seconds | drctl vs this |"
echo "| --- | --- | --- |"
echo "| pg_dump -Fc -Z0 > /dev/null | $raw | $(ratio $drb $raw) (target <= 1.40x) |"
echo "| pg_dump -Fc (gzip level 6 inside pg_dump) | $fc | $(ratio $drb $fc) |"
echo "| pg_dump \| gzip | $gz | $(ratio $drb $gz) |"
echo "| pg_dump -Fc -Z0 \| zstd -1 > file (same codec, no checks) | $zp | $(ratio $drb $zp) |"
echo "| drctl run, row counts off (count_rows_max_table_size = 0) | $drnc | $(ratio $drnc $raw) vs raw |"
echo "| drctl run (zstd -1, sha256, fsync, row counts in the snapshot) | $drb | |"
echo "| drctl run, encrypted (age, X25519) | $drenc | $(ratio $drenc $drb) vs unencrypted, $(ratio $drenc $raw) vs raw |"
echo "| drctl verify (re-read + SHA-256) | $ver | |"
echo "| drctl verify --deep, encrypted (decrypt, decompress, pg_restore --list) | $verd | |"
echo
echo "| restore | seconds | drctl vs this |"
echo "| --- | --- | --- |"
echo "| pg_restore -j2 from local pg_dump -Fc file | $pgr | $(ratio $drr $pgr) (target <= 1.15x) |"
echo "| gunzip -c \| psql | $gzr | $(ratio $drr $gzr) |"
echo "| drctl restore --latest --jobs 2 (fetch, verify, decompress, restore) | $drr | |"
echo "| drctl restore, encrypted backup | $dre | $(ratio $dre $drr) vs unencrypted |"
echo
echo "stored: drctl $(numfmt --to=iec $stored), pg_dump -Fc $(numfmt --to=iec $(stat -c %s $tmp/bench.dump)), pg_dump|gzip $(numfmt --to=iec $(stat -c %s $tmp/bench.sql.gz))"
echo "drctl peak RSS: backup $(mib $drb_rss) ($size), backup $(mib $small_rss) ($size_small), encrypted backup $(mib $drenc_rss), restore $(mib $drr_rss) (target <= 64 MiB, flat)"
