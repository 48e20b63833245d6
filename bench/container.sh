#!/usr/bin/env bash
# PostgreSQL in a container: drctl's exec path against host mode on the
# same database, in one run.
#
#   bench/container.sh [SIZE_GB]      (default 0.5; needs ~4x that free in /tmp; root, docker.io)
#
# Starts a private dockerd, imports an image made of this host's own
# PostgreSQL binaries (no registry needed), runs PostgreSQL in it on the
# host network (so host-mode tools can reach the very same server), loads
# the same kind of rows as bench/backup_restore.sh, then prints wall times
# and ratios:
#   backup : drctl run, container = (pg_dump via the Engine API's exec)
#            vs drctl run, url = (host pg_dump over TCP) vs pg_dump -Fc -Z0 | zstd
#   restore: drctl restore -j2 into the container's own database (copy + exec)
#            vs the same restore in host mode
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_GB=${1:-0.5}
cargo build --release --quiet
drctl="$PWD/target/release/drctl"
tmp=$(mktemp -d /tmp/drctl-bench.XXXXXX); chmod 755 "$tmp"
sock="$tmp/docker.sock"
D() { docker -H "unix://$sock" "$@"; }
dockerd --host "unix://$sock" --data-root "$tmp/root" --exec-root "$tmp/exec" \
  --pidfile "$tmp/dockerd.pid" --iptables=false --ip6tables=false --bridge=none >"$tmp/dockerd.log" 2>&1 &
dpid=$!
trap 'D rm -f benchpg >/dev/null 2>&1 || true; kill $dpid 2>/dev/null; wait $dpid 2>/dev/null || true; umount "$tmp"/exec/netns/* 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 60); do D version >/dev/null 2>&1 && break; sleep 1; done
t() { local s=$(date +%s.%N); "$@" >/dev/null; python3 -c "print(f'{$(date +%s.%N) - $s:.2f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }

# The image: this host's PostgreSQL, its libraries, nothing else.
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
major=$(basename "$(dirname "$bin")")
lib=/usr/lib/postgresql/$major/lib
{
  for b in "$bin"/{postgres,initdb,pg_dump,pg_dumpall,pg_restore,psql} /bin/sh /bin/mktemp /bin/rm; do
    echo "$b"; ldd "$b" | grep -o '/[^ ]*' || true
  done
  find "$lib" -maxdepth 1 -name '*.so' ! -name 'llvmjit*' | while read -r so; do echo "$so"; ldd "$so" | grep -o '/[^ ]*' || true; done
  find "/usr/share/postgresql/$major" /usr/share/zoneinfo \( -type f -o -type l \)
} | sort -u > "$tmp/files"
mkdir -p "$tmp/extra/etc" "$tmp/extra/var/run/postgresql" "$tmp/extra/var/lib/postgresql" "$tmp/extra/tmp"
printf 'root:x:0:0::/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' > "$tmp/extra/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' > "$tmp/extra/etc/group"
chown 999:999 "$tmp/extra/var/run/postgresql" "$tmp/extra/var/lib/postgresql"; chmod 1777 "$tmp/extra/tmp"
tar -chf "$tmp/rootfs.tar" -T "$tmp/files" 2>/dev/null
tar -rf "$tmp/rootfs.tar" -C "$tmp/extra" .
D import "$tmp/rootfs.tar" pg:bench >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
D run -d --name benchpg --network host --user 999:999 -e "PATH=$bin:/bin" pg:bench /bin/sh -c \
  "initdb -D /var/lib/postgresql/data -U postgres --auth=trust --no-locale -E UTF8 >/dev/null && exec postgres -D /var/lib/postgresql/data -c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=/var/run/postgresql -c shared_buffers=512MB -c max_wal_size=4GB -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c jit=off" >/dev/null
base="postgres://postgres@127.0.0.1:$port"
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
for _ in $(seq 1 60); do psql -X -q -At -d "$base/postgres" -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
q() { psql -X -q -At -d "$base/$1" -c "$2"; }

rows=$(python3 -c "print(int($SIZE_GB * 1024**3 / 330))")
echo "building the database ($rows rows, about ${SIZE_GB} GB) in the container ..."
q postgres "CREATE DATABASE bench"
q bench "CREATE TABLE payment (id bigserial PRIMARY KEY, order_ref uuid NOT NULL, customer text NOT NULL,
    amount numeric(12,2) NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL,
    card_token text NOT NULL, meta jsonb NOT NULL, signature bytea NOT NULL)"
q bench "INSERT INTO payment (order_ref, customer, amount, status, created_at, card_token, meta, signature)
    SELECT gen_random_uuid(), 'cust-' || (random()*1e7)::int, round((random()*5000)::numeric, 2),
           (ARRAY['paid','failed','refunded','pending'])[1 + (random()*3)::int], now() - random() * interval '365 days',
           md5(random()::text) || md5(random()::text), jsonb_build_object('risk', random(), 'ua', md5(random()::text)),
           decode(md5(random()::text) || md5(random()::text), 'hex')
    FROM generate_series(1, $rows)"
q bench "VACUUM ANALYZE payment"
echo "database: $(q postgres "SELECT pg_size_pretty(pg_database_size('bench'))"); cores: $(nproc); PostgreSQL $major"

cat > "$tmp/drctl.toml" <<TOML
state_dir = "$tmp/state"
[repositories.local]
type = "local"
path = "$tmp/repo"
[jobs.host]
type = "postgres"
url = "$base/bench"
repository = "local"
[jobs.exec]
type = "postgres"
container = "benchpg"
url = "postgres://postgres@/bench?host=/var/run/postgresql&port=$port"
docker_socket = "$sock"
repository = "local"
TOML
d() { "$drctl" --config "$tmp/drctl.toml" "$@"; }

echo "backup (each twice, the second counted) ..."
d run host >/dev/null; d run exec >/dev/null
zp=$(t sh -c "pg_dump -Fc -Z0 -d bench | zstd -q -1 -T2 > $tmp/bench.dump.zst")
dx=$(t sh -c "docker -H unix://$sock exec -u postgres benchpg pg_dump -Fc -Z0 -h /var/run/postgresql -p $port -d bench | zstd -q -1 -T2 > $tmp/bench.dump.zst")
host=$(t d run host)
exec_=$(t d run exec)
echo "  pg_dump -Fc -Z0 | zstd -1   ${zp}s"
echo "  docker exec pg_dump | zstd  ${dx}s   $(ratio "$dx" "$zp") of pg_dump | zstd (the Engine's own cost)"
echo "  drctl run (host mode)       ${host}s   $(ratio "$host" "$zp") of pg_dump | zstd"
echo "  drctl run (container exec)  ${exec_}s   $(ratio "$exec_" "$host") of host mode, $(ratio "$exec_" "$zp") of pg_dump | zstd, $(ratio "$exec_" "$dx") of docker exec pg_dump | zstd"

echo "restore -j2 into the job's own database ..."
rh=$(t d restore --latest --job host --yes --jobs 2)
re=$(t d restore --latest --job exec --yes --jobs 2)
echo "  drctl restore (host mode)      ${rh}s"
echo "  drctl restore (container exec) ${re}s   $(ratio "$re" "$rh") of host mode"
