# Thin wrapper over CMake. `make test` is what CI runs (see README.md).
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all build test bench deps fixtures clean run install

all: build

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -LE long

bench: build
	$(BUILD)/bench/moe_layer_bench

# `make install` puts bin/moepp, the libraries, headers, the CMake package and the Python
# package under PREFIX (default ~/.local: bin/ there is on PATH in most shells).
PREFIX ?= $(HOME)/.local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)
	@echo "installed: $(PREFIX)/bin/moepp (run: moepp --version)"

run:
	bash scripts/run-main.sh

deps:
	bash scripts/setup-deps.sh

fixtures:  # needs Debian's python3-torch; never needed to build or test
	/usr/bin/python3 tools/reference/moe_reference.py --out tests/fixtures
	/usr/bin/python3 tools/reference/decoder_reference.py --out tests/fixtures
	/usr/bin/python3 tools/reference/torch_bin_fixtures.py --out tests/fixtures/torch_bin
	/usr/bin/python3 tools/reference/hf_folder_fixtures.py --out tests/fixtures/hf

clean:
	rm -rf $(BUILD)
