#!/usr/bin/env bash
# Validation time against the number of errors: `bench/config_errors.sh [N...]`
# (default 2000 8000 110000). Each config has N jobs that all name a
# repository that does not exist; `drctl config check` must answer (exit 2,
# every error listed) in time linear in N. Prints N, seconds, errors listed.
set -euo pipefail
cd "$(dirname "$0")/.."
# DRCTL_BIN=target/debug/drctl measures a debug build instead.
bin=${DRCTL_BIN:-target/release/drctl}
[ -n "${DRCTL_BIN:-}" ] || cargo build --release --locked -q
dir=$(mktemp -d /tmp/drctl-config-errors.XXXXXX)
trap 'rm -rf "$dir"' EXIT
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(2000 8000 110000)
printf '%8s %9s %8s\n' jobs seconds errors
for n in "${sizes[@]}"; do
  cfg="$dir/bad-$n.toml"
  {
    printf '[repositories.local]\ntype = "local"\npath = "%s/repo"\n' "$dir"
    for i in $(seq 1 "$n"); do
      printf '[jobs.j%d]\ntype = "files"\npaths = ["/etc/hostname"]\nrepository = "nope"\n' "$i"
    done
  } >"$cfg"
  start=$(date +%s.%N)
  set +e
  "$bin" -c "$cfg" config check >/dev/null 2>"$dir/err"
  code=$?
  set -e
  end=$(date +%s.%N)
  [ "$code" -eq 2 ] || { echo "exit $code, expected 2" >&2; exit 1; }
  printf '%8d %9.2f %8d\n' "$n" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$(grep -c 'no repository named' "$dir/err")"
done
