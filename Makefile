# Entry points. Each target installs what it needs first (scripts/install-deps.sh is idempotent).
#   make studio   build and open the studio on its embedded backend (starter dataset offered on first launch)
#   make demo     headless pipeline on the starter dataset
#   make test     formatting check, build + every test (plus the core/media/catalog suites under ASan+UBSan)
#   make bench    build + benchmarks, results appended to docs/BENCHMARKS.md by hand
#   make package  .deb with CPack

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: deps configure build studio test test-asan format-check demo bench package clean format

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: format-check build test-asan
	@cd $(BUILD) && ctest -j $(JOBS) --output-on-failure --timeout 600
	@echo "all test suites passed (regular and ASan+UBSan builds)"

# Every tracked C++ file as `make format` (clang-format with .clang-format) writes it.
format-check: deps
	@git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run -Werror
	@echo "formatting: clean"

# Everything without LibTorch (core, media, catalog, datasets, CLI, checkpoint store), built again with
# AddressSanitizer + UBSan and tested.
test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DMUGV_SANITIZE=ON -DMUGV_WITH_TORCH=OFF -DMUGV_BUILD_UI=OFF \
	  -DMUGV_BUILD_MONITOR=OFF -DMUGV_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest -j $(JOBS) --output-on-failure --timeout 600

studio: build
	@bash scripts/studio.sh $(BUILD)

demo: build
	@bash scripts/demo.sh $(BUILD)

bench: build
	@bash scripts/bench.sh $(BUILD)

package: build
	@cd $(BUILD) && cpack -G DEB

format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i

clean:
	@rm -rf $(BUILD) $(ASAN_BUILD)
