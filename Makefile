# adlkit - every target bootstraps its environment first:
#   * inside an active virtualenv or conda env, it installs adlkit there (pip install -e ".[dev,notebooks,offline,elpv,teach]");
#   * otherwise it creates ./.venv with pip and installs there.
# Targets: make run (FULL=1 for full mode) | make test | make lab | make figures | make assignments | make book | make clean
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
EXTRAS ?= dev,notebooks,offline,elpv,teach
FULL ?= 0
# TORCH=cpu: install PyTorch's CPU-only wheels first (about 200 MB instead of 2.5 GB of CUDA libraries on Linux;
# a laptop without an NVIDIA GPU loses nothing). Needs download.pytorch.org; PyPI's torch is used otherwise.
TORCH ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

ifneq ($(VIRTUAL_ENV),)
  ENV_DIR := $(VIRTUAL_ENV)
else ifneq ($(CONDA_PREFIX),)
  ENV_DIR := $(CONDA_PREFIX)
else
  ENV_DIR := .venv
endif
PY := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.adlkit-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
FULL_FLAG := $(if $(filter 1 yes true,$(FULL)),--full,)

.PHONY: run test unit notebooks lab figures exercises assignments book book-refresh check-notebooks bootstrap clean

bootstrap: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x "$(PY)" ]; then echo ">> creating $(ENV_DIR) with $(PYTHON) -m venv"; $(PYTHON) -m venv $(ENV_DIR); fi
	@if [ "$(TORCH)" = "cpu" ]; then echo ">> CPU-only PyTorch from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install --disable-pip-version-check -q "torch>=2.1" "torchvision>=0.16" --index-url $(TORCH_CPU_INDEX); \
	elif [ -n "$(TORCH)" ]; then echo "TORCH=$(TORCH): only TORCH=cpu is known (or leave it unset)"; exit 2; fi
	@echo ">> installing adlkit[$(EXTRAS)] into $(ENV_DIR) (first time: a few minutes, PyTorch is large)"
	@t0=$$(date +%s); \
	$(PY) -m pip install --disable-pip-version-check -q -e ".[$(EXTRAS)]" 2>&1 | { grep -v "is ignored: it is neither" || true; }; \
	echo ">> installed in $$(( $$(date +%s) - t0 )) s"
	@touch $(STAMP)

## The main job: execute every notebook in order, headless (quick mode; FULL=1 for full mode).
run: bootstrap
	$(PY) -m adlkit execute $(NOTEBOOKS) $(FULL_FLAG) --out build/notebooks

## Unit tests + every notebook under nbval (quick mode), plus the repository checks CI runs.
test: bootstrap check-notebooks
	ADLKIT_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=900 -p no:cacheprovider

unit: bootstrap
	ADLKIT_QUICK=1 $(PY) -m pytest tests -q -p no:cacheprovider

## Committed notebooks carry no outputs; exercises/ is current with notebooks/; figures/REPORT.md and the generated
## sections of README.md and docs/ are current with figures/results/ (python -m adlkit report); the book's executed
## copies are current with their sources (python -m adlkit book --check).
check-notebooks: bootstrap
	$(PY) -m nbstripout --verify $(NOTEBOOKS) $(wildcard exercises/*.ipynb) || \
	  { echo "!! a committed notebook carries outputs: run nbstripout on it (or pre-commit install)"; exit 1; }
	$(PY) -m adlkit assignments --check
	$(PY) -m adlkit report --check
	$(PY) -m adlkit book --check

lab: bootstrap
	$(PY) -m jupyter lab notebooks

## Full mode (the papers' plots; <= 15 min a notebook on a 2-core CPU), writing figures/*.png and figures/results/*.json.
figures: bootstrap
	$(PY) -m adlkit execute $(NOTEBOOKS) --full --save-figures --out build/notebooks

## The nbgrader course in build/assignments/ (source, release, gradebook), exercises/ (the release) and the
## student bundle build/assignments/adlkit-student.zip; see docs/teaching.md.
assignments: bootstrap
	$(PY) -m adlkit assignments --bundle

exercises: assignments

## The executed series as a static site in build/book/ (open build/book/index.html). book-refresh first executes,
## in full mode, the notebooks whose executed copy in book/notebooks/ is stale or missing (NB="04 07": those).
book: bootstrap
	$(PY) -m adlkit book --out build/book

book-refresh: bootstrap
	$(PY) -m adlkit book --refresh $(NB) --out build/book

clean:
	rm -rf build .pytest_cache
