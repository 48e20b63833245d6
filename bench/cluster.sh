# Sourced by the benchmarks: a throwaway PostgreSQL cluster in $tmp, tuned
# for loading (fsync off: the benchmarks measure drctl, not the disk's
# flush latency of the bench database), stopped and removed on exit.
#   needs: $tmp (created with mktemp -d, chmod 777)
#   sets:  $port, $base (postgres://postgres@127.0.0.1:$port), q DB SQL
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PATH="$bindir:$PATH"
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run_pg initdb -D "$tmp/data" -U postgres --auth=trust >/dev/null
run_pg pg_ctl start -w -D "$tmp/data" -l "$tmp/log" -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$tmp -c shared_buffers=512MB -c maintenance_work_mem=256MB -c max_wal_size=4GB -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
trap 'run_pg pg_ctl stop -m fast -D "$tmp/data" >/dev/null; rm -rf "$tmp"' EXIT
base="postgres://postgres@127.0.0.1:$port"
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
q() { psql -X -q -At -d "$base/$1" -c "$2"; }
# Wall seconds of a command.
t() { local s=$(date +%s.%N); "$@"; python3 -c "print(f'{$(date +%s.%N) - $s:.2f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
