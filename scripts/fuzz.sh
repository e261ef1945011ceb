#!/usr/bin/env bash
# fuzz.sh <target> <src> <builddir> [libFuzzer args...]
# Builds tests/fuzz/<target>.c with clang in <builddir> (a nested build) and
# runs it on its corpus (tests/fuzz/corpus_<name>, <name> = target minus
# "fuzz_").  ctest runs it bounded (-runs=50000); for a long run:
#   scripts/fuzz.sh fuzz_http . build/fuzz -max_total_time=600
set -euo pipefail
target=$1 src=$2 bdir=$3
shift 3
cmake=${CMAKE:-cmake}
clang=${BRAID_CLANG:-clang}
"$cmake" -S "$src" -B "$bdir" -DCMAKE_C_COMPILER="$clang" -DBUILD_TESTING=OFF \
  -DBRAID_SANITIZER_PASS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
"$cmake" --build "$bdir" --target "$target" -j2 >/dev/null
name=${target#fuzz_}
corpus="$src/tests/fuzz/corpus_$name"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -d "$corpus" ]; then cp "$corpus"/* "$work"/; fi   # else: an empty corpus
exec "$bdir/$target" -max_len=2048 "$@" "$work"
