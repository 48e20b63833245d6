#!/usr/bin/env bash
# The long fault run: `bench/faults.sh [--pitr] [--rounds N] [--seed S]`.
#
# With --pitr: the point-in-time rounds of tests/pitr.rs (default 25
# rounds: each kills a base backup (its host's clock +60 s, -60 s or
# right), the archive_command's `wal push` twice, a point-in-time restore
# and a drill at random points, then flips or deletes two WAL objects and
# two base backup objects, each followed by a restore to the latest point
# or a random earlier moment, checked row for row). Its table:
#   false successes | wrong data | clusters left running | leftovers
# all of which must be 0.
#
# Runs the fault suite's random test (tests/faults.rs) with N rounds
# (default 64: about 110 SIGKILLs) at random points of backup, restore (the swap
# of the job's own database included), prune and a refused restore, each
# followed by recovery and a sweep; then 4N backups and restores through an
# S3 endpoint that resets connections mid-request at random. After every
# fault it checks the invariants and prints one table:
#   false successes | lost good backups | touched on refusal | leftovers |
#   unreachable databases | listed backups failing `verify --deep`
# all of which must be 0. The seed is printed; pass it back to replay.
# Root only (as CI): the suite mounts small tmpfs file systems and uses
# network-less UTS namespaces for its other tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=""
seed=""
pitr=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pitr) pitr=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--pitr] [--rounds N] [--seed S]" >&2; exit 2 ;;
  esac
done
if [ "$pitr" = 1 ]; then
  rounds=${rounds:-25}
  test_binary=pitr
  test_name=pitr_random_kills_and_object_faults
else
  rounds=${rounds:-64}
  test_binary=faults
  test_name=random_kills_and_store_faults
fi
export DRCTL_FAULT_ROUNDS=$rounds
[ -n "$seed" ] && export DRCTL_FAULT_SEED=$seed
start=$(date +%s)
log=$(mktemp /tmp/drctl-faults.XXXXXX)
set +e
cargo test --release --locked --test "$test_binary" -- "$test_name" --nocapture >"$log" 2>&1
status=$?
set -e
grep -E '^(faults|pitr faults|\||round|test result|thread)' "$log" || tail -50 "$log"
echo "elapsed: $(( $(date +%s) - start )) s (full log: $log)"
exit $status
