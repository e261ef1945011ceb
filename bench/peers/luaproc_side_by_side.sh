#!/bin/bash
# bench/peers/luaproc_side_by_side.sh [BUILDDIR] [REPS] -- luaproc (the
# anchors' rows, ../shared/anchors/) vs braid's own bench/runtime.lua twins.
# luaproc must be rebuilt first per ../shared/anchors/BUILD-PEERS.md into
# $ANCHORS (its env.sh and bench/); not run by `make bench`.
#   BUILDDIR: braid build directory holding the `braid` binary (default build)
#   REPS:     rounds (default 3)
# Round k runs, for each workload, the luaproc row and then the braid row, so that host
# noise drifts hit both alike.  Every invocation runs under `timeout 120`.
#   luaproc rows: exactly as bench/run_all.sh runs them (cwd $ANCHORS/bench, env.sh sourced,
#                 common.lua sizes: 200k ints, 100k tables, 50k round trips)
#   braid rows:   BRAID_BENCH_REPS=1 BUILDDIR/braid $RUNTIME_LUA <case>  (one rep; prints one number;
#                 runtime.lua sizes: the same 200k / 100k / 50k)
# Env: ANCHORS (default /tmp/anchors), RUNTIME_LUA (default bench/runtime.lua).
# Raw lines -> $ANCHORS/results/cmp-raw-<timestamp>.txt; the table goes to stdout.
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
A=${ANCHORS:-/tmp/anchors}
export ANCHORS=$A   # env.sh reads it (under set -u)
BUILDDIR=$(cd "${1:-$root/build}" && pwd) || { echo "no build dir: ${1:-}" >&2; exit 2; }
REPS=${2:-3}
RUNTIME_LUA=${RUNTIME_LUA:-$root/bench/runtime.lua}
BRAID=$BUILDDIR/braid
[ -x "$BRAID" ] || { echo "no braid binary at $BRAID" >&2; exit 2; }
[ -f "$RUNTIME_LUA" ] || { echo "no $RUNTIME_LUA" >&2; exit 2; }
[ -f "$A/env.sh" ] || { echo "no $A/env.sh (build the peers first)" >&2; exit 2; }
mkdir -p "$A/results"
TS=$(date +%Y%m%d-%H%M%S)
OUT=$A/results/cmp-raw-$TS.txt

# workload | luaproc args (run_all.sh's) | luaproc RESULT field | braid case | unit | higher is better
# The "w1/br2" rows are luaproc's one-worker rows (its best for one-way
# streams: producer and consumer alternate on one thread) against braid's
# default two workers, the issue's rows: both sides as each runs best.
WORKLOADS=(
  "B1int w2|B1int x 2|rate|ints|msg/s|1"
  "B1int w1/br2|B1int x 1|rate|ints|msg/s|1"
  "B1tab w2|B1tab x 2|rate|tables|msg/s|1"
  "B1tab w1/br2|B1tab x 1|rate|tables|msg/s|1"
  "B2 w2|B2 x 2|us_per_rt|pingpong_across|us/RT|0"
  "B2 w1|B2 x 1|us_per_rt|pingpong_same|us/RT|0"
)

# run_luaproc ARGS FIELD -> prints the value (or nothing); rc in $RC, output tail in $TAIL
run_luaproc() {
  local of; of=$(mktemp)
  ( . "$A/env.sh"; cd "$A/bench" && timeout 120 lua5.4 luaproc_bench.lua $1 ) > "$of" 2>&1
  RC=$?
  VAL=$(grep '^RESULT' "$of" | head -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}')
  TAIL=$(tail -c 200 "$of" | tr '\n' ' ')
  rm -f "$of"
}
run_braid() {
  local of; of=$(mktemp)
  ( cd /tmp && BRAID_BENCH_REPS=1 timeout 120 "$BRAID" "$RUNTIME_LUA" "$1" ) > "$of" 2>&1
  RC=$?
  VAL=$(grep -E '^[0-9.eE+-]+$' "$of" | tail -1)
  TAIL=$(tail -c 200 "$of" | tr '\n' ' ')
  rm -f "$of"
}

{
  echo "# cmp.sh reps=$REPS started $(date -Is) on $(nproc) cpus; braid=$BRAID ($(git -C "$BUILDDIR/.." rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "# luaproc: $A/src/luaproc-990ecf6/bin/luaproc.so; runtime.lua: $RUNTIME_LUA"
} > "$OUT"
echo "raw -> $OUT"
for rep in $(seq 1 "$REPS"); do
  for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r label largs field bcase unit higher <<< "$w"
    run_luaproc "$largs" "$field"
    line="rep=$rep lib=luaproc workload=\"$label\" cmd=\"lua5.4 luaproc_bench.lua $largs\" rc=$RC value=${VAL:-MISSING}"
    [ "$RC" != 0 ] || [ -z "$VAL" ] && line="$line out=\"$TAIL\""
    echo "$line" | tee -a "$OUT"
    run_braid "$bcase"
    line="rep=$rep lib=braid workload=\"$label\" cmd=\"braid runtime.lua $bcase\" rc=$RC value=${VAL:-MISSING}"
    [ "$RC" != 0 ] || [ -z "$VAL" ] && line="$line out=\"$TAIL\""
    echo "$line" | tee -a "$OUT"
  done
done
echo "# finished $(date -Is)" >> "$OUT"

python3 - "$OUT" "${WORKLOADS[@]}" <<'EOF'
import re, sys, statistics as st
raw, specs = sys.argv[1], sys.argv[2:]
vals, fails = {}, {}
for line in open(raw):
    m = re.match(r'rep=\d+ lib=(\w+) workload="([^"]+)" cmd="[^"]*" rc=(\d+) value=(\S+)', line)
    if not m: continue
    lib, wl, rc, v = m[1], m[2], int(m[3]), m[4]
    if rc == 0 and v != 'MISSING': vals.setdefault((lib, wl), []).append(float(v))
    else: fails.setdefault((lib, wl), []).append(f'rc={rc}')
def fmt(x):
    if x is None: return '-'
    if x >= 1e6: return f'{x/1e6:.3f} M'
    if x >= 1e4: return f'{x/1e3:.0f} k'
    return f'{x:.3g}'
print(f"{'workload':12s} {'luaproc med':>12s} {'braid med':>12s} {'unit':6s}  {'leads':18s} {'luaproc min-max':>19s} {'braid min-max':>19s}  n(lp/br)")
for s in specs:
    label, _, _, bcase, unit, higher = s.split('|')
    lp, br = vals.get(('luaproc', label), []), vals.get(('braid', label), [])
    ml = st.median(lp) if lp else None; mb = st.median(br) if br else None
    lead = '-'
    if ml and mb:
        r = (mb / ml) if higher == '1' else (ml / mb)   # >1: braid better
        lead = f'braid {r:.2f}x' if r >= 1 else f'luaproc {1/r:.2f}x'
    rng = lambda v: f'{fmt(min(v))}-{fmt(max(v))}' if v else '-'
    extra = ''
    for lib in ('luaproc', 'braid'):
        if (lib, label) in fails: extra += f' {lib} FAIL {",".join(fails[(lib, label)])}'
    print(f"{label:12s} {fmt(ml):>12s} {fmt(mb):>12s} {unit:6s}  {lead:18s} {rng(lp):>19s} {rng(br):>19s}  {len(lp)}/{len(br)}{extra}")
EOF
