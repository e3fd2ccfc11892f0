# Set-up and the two commands the README starts with. Works on a fresh clone with only
# Python 3.11: the venv is created when missing and re-installed when pyproject.toml or
# constraints.txt change.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUITE  ?= suites/bench.yaml
JOBS   ?=

.PHONY: bench test lint docs install clean vision trained text device-check

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Run the default suite (resumes if results/ already holds part of it) and write reports/.
bench: $(STAMP)
	$(BIN)/modelopt run $(SUITE) --out results/$(basename $(notdir $(SUITE))) $(if $(JOBS),--jobs $(JOBS))
	$(BIN)/modelopt report results/$(basename $(notdir $(SUITE))) --out reports --csv

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check modelopt tests benchmarks

# The documentation site: generated pages (techniques, metrics, findings), then a strict
# build (a broken link or a page missing from the nav fails); open site/index.html.
docs: $(STAMP)
	$(BIN)/python tools/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) results .benchmarks site docs/generated/findings

# The vision suite: digits written out as 32x32 PNG files, streamed through imagefolder.
vision: $(STAMP)
	test -d data/digits32 || $(BIN)/modelopt images digits data/digits32
	$(BIN)/modelopt run suites/vision.yaml --out results/vision
	$(BIN)/modelopt report results/vision --out reports --csv

# A model trained elsewhere (suites/trained.yaml): the committed weights of
# suites/weights/train_digits.py, compressed without retraining; report into reports/.
# The worked example of your own images and training is examples/trained/run.sh.
trained: $(STAMP)
	$(BIN)/modelopt run suites/trained.yaml --out results/trained
	$(BIN)/modelopt report results/trained --out reports --csv

# Text and transformers (suites/text.yaml, about 20 minutes): a character-level GPT on the
# built-in corpus and a docstring classifier, dense against their compressed versions
text: $(STAMP)
	$(BIN)/modelopt run suites/text.yaml --out results/text
	$(BIN)/modelopt report results/text --out reports --csv

# The GPU device check (docs/development.md, "Device check (GPU)"): wheels a lent GPU machine lacks into
# .whl/, the preparation checked, the one command to run there printed; without a GPU here
# it stops there.
device-check: $(STAMP)
	bash tools/device_check.sh
