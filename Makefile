# Thin wrapper around CMake/CTest.  The real build is CMakeLists.txt.
#
#   make deps    install missing Debian packages (scripts/deps.sh)
#   make build   configure (once) and build in $(BUILD)
#   make test    build, then run every test (incl. the sanitizer builds)
#   make demo    build, then run the demo (scripts/demo.sh)
#   make demo-cluster  the demo over NATS, 3 processes (scripts/demo_cluster.sh)
#   make bench   build, install the peers the benchmarks compare with
#                (scripts/bench-deps.sh: Go, wrk, nginx+lua, luv, LuaSocket),
#                then run the benchmarks (scripts/bench.sh)
#   make soak    build, then the accounting stress (tests/stress/accounting.lua)
#                for SOAK_SECONDS (default 600; env BRAID_STRESS_SEED fixes the seed)
#   make clean   remove $(BUILD);  make distclean: every build*/ dir
#
# Variables: BUILD (build dir, default build), JOBS (parallelism, default 2),
# CMAKE_ARGS (extra arguments for the first configure, e.g.
# CMAKE_ARGS=-DBRAID_SANITIZE=thread BUILD=build-tsan).

BUILD ?= build
JOBS ?= 2
CMAKE ?= cmake
CTEST ?= ctest
CMAKE_ARGS ?=

MAKEFLAGS += --no-print-directory

.PHONY: all deps build test demo demo-cluster bench soak install clean distclean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@test -f $(BUILD)/CMakeCache.txt || \
	  $(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)
	$(CMAKE) --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && $(CTEST) --output-on-failure -j$(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)

demo-cluster: build
	@bash scripts/demo_cluster.sh $(BUILD)

bench: build
	@bash scripts/bench-deps.sh
	@bash scripts/bench.sh $(BUILD)

# The issue-16 stress, long: every value accounted for (seed printed).
SOAK_SECONDS ?= 600
soak: build
	LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;" \
	LUA_CPATH="$(abspath $(BUILD))/?.so;;" \
	  lua5.4 tests/stress/accounting.lua $(SOAK_SECONDS)

clean:
	rm -rf $(BUILD)

distclean:
	rm -rf build build-*/ build_*/

# `make install [PREFIX=/usr/local]`; DESTDIR passes through the environment.
install: build
	$(CMAKE) --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX))
