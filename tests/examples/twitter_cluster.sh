#!/usr/bin/env bash
# tests/examples/twitter_cluster.sh -- smoke test of the cluster demo
# (scripts/demo_cluster.sh, examples/twitter_cluster.lua): three processes
# over a nats-server of its own, then again with a helper killed; both
# runs must print the totals of the one-process analyzer.  Skipped (exit 0
# with a message) only when nats-server is not installed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
BRAID_SRC=${BRAID_SRC:-$(cd "$here/../.." && pwd)}
BRAID_BUILD=${BRAID_BUILD:-$BRAID_SRC/build}
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  echo "skip - nats-server not found (Debian package nats-server)"
  exit 0
fi
out=$(timeout 100 bash "$BRAID_SRC/scripts/demo_cluster.sh" "$BRAID_BUILD" 2>&1)
rc=$?
want="total: 24 tweets, 243 retweets, 6759 unique users reached by any tweet"
fail=0
[ $rc -eq 0 ] && echo "ok - demo_cluster.sh exits 0" || { echo "FAIL - demo_cluster.sh exit $rc"; fail=1; }
n=$(grep -cF "$want" <<<"$out")
[ "$n" -eq 2 ] && echo "ok - both runs give the analyzer's totals" || { echo "FAIL - totals seen $n times"; fail=1; }
grep -q "the same answer with a helper killed: yes" <<<"$out" && echo "ok - same answer with a helper killed" || { echo "FAIL - answers differ"; fail=1; }
grep -q "killed helper" <<<"$out" && echo "ok - a helper was killed" || { echo "FAIL - no helper killed"; fail=1; }
[ $fail -eq 0 ] || echo "$out"
exit $fail
