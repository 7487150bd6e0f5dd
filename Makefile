# Thin wrapper over CMake. `make test` is what CI runs (see README.md).
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all build test bench deps fixtures clean run

all: build

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -LE long

bench: build
	$(BUILD)/bench/moe_layer_bench

run:
	bash scripts/run-main.sh

deps:
	bash scripts/setup-deps.sh

fixtures:
	/usr/bin/python3 tools/reference/moe_reference.py --out tests/fixtures

clean:
	rm -rf $(BUILD)
