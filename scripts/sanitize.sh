#!/usr/bin/env bash
# scripts/sanitize.sh -- build this tree under a sanitizer and run its tests.
#
# usage: scripts/sanitize.sh <thread|address> <source-dir> <build-dir>
#
# Configures (or updates) a nested build in <build-dir> with
# -DBRAID_SANITIZE=<kind> as a Debug -O1 build, builds it, and runs the tests
# labelled core plus those labelled for this kind (tsan, asan).  The main build registers this as the tests
# sanitize_thread and sanitize_address; run it by hand the same way:
#
#   bash scripts/sanitize.sh thread . build/sanitize-thread
#
# Environment (all optional; the ctest registration sets them):
#   CMAKE, CTEST              cmake/ctest to use (default: from PATH)
#   BRAID_CC                  C compiler of the outer build
#   BRAID_CMAKE_GENERATOR     generator of the outer build (first configure)
#   BRAID_SANITIZE_JOBS       parallel build/test jobs (default 2)
#   BRAID_SANITIZE_LABELS     ctest -L regex (default 'core|tsan|asan')
set -euo pipefail

usage() { echo "usage: $0 <thread|address> <source-dir> <build-dir>" >&2; exit 2; }
[ $# -eq 3 ] || usage
kind=$1 src=$2 bin=$3
case "$kind" in thread|address) ;; *) usage ;; esac

src=$(cd "$src" && pwd)
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

cmake=${CMAKE:-cmake}
ctest=${CTEST:-ctest}
jobs=${BRAID_SANITIZE_JOBS:-2}
# A test labelled tsan runs in the thread pass, asan in the address pass,
# core in both.
case "$kind" in
  thread) default_labels='core|tsan' ;;
  address) default_labels='core|asan' ;;
esac
labels=${BRAID_SANITIZE_LABELS:-$default_labels}

args=(-S "$src" -B "$bin"
      "-DBRAID_SANITIZE=$kind"
      -DBRAID_SANITIZER_PASS=OFF
      -DCMAKE_BUILD_TYPE=Debug
      "-DCMAKE_C_FLAGS_DEBUG=-g -O1")
if [ -n "${BRAID_CC:-}" ]; then
  args+=("-DCMAKE_C_COMPILER=$BRAID_CC")
fi
if [ ! -f "$bin/CMakeCache.txt" ] && [ -n "${BRAID_CMAKE_GENERATOR:-}" ]; then
  args+=(-G "$BRAID_CMAKE_GENERATOR")
fi

echo "== sanitize.sh: configure ($kind) in $bin"
"$cmake" "${args[@]}"
echo "== sanitize.sh: build ($kind)"
"$cmake" --build "$bin" -j"$jobs"

case "$kind" in
  thread)
    opts="halt_on_error=1 second_deadlock_stack=1"
    if [ -f "$src/tests/tsan.supp" ]; then
      opts="suppressions=$src/tests/tsan.supp $opts"
    fi
    export TSAN_OPTIONS="$opts${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
    ;;
  address)
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    ;;
esac

# The sanitizer runtimes of gcc 12 / clang 14 cannot map their shadow memory
# when the kernel randomizes mmap with more than 28 bits (vm.mmap_rnd_bits
# = 32 on newer kernels): TSan dies with "unexpected memory mapping", ASan
# loops on DEADLYSIGNAL.  Run the tests with ASLR off in that case.
run=()
rnd_bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
if [ "$rnd_bits" -gt 28 ] && setarch "$(uname -m)" -R true 2>/dev/null; then
  echo "== sanitize.sh: vm.mmap_rnd_bits=$rnd_bits: running tests with ASLR off"
  run=(setarch "$(uname -m)" -R)
fi

echo "== sanitize.sh: test ($kind, labels '$labels')"
cd "$bin"
"${run[@]}" "$ctest" --output-on-failure -j"$jobs" -L "$labels"
