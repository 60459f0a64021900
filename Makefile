# Two entry points for people: `make demo` and `make test`. Both install what they
# need first; the ComfyUI environment is cached under $(FUNART_CACHE_DIR).
PYTHON ?= python3
VENV := .venv
FUNART_CACHE_DIR ?= $(HOME)/.cache/funart-runtime
export FUNART_CACHE_DIR

.PHONY: install comfyui checkpoint s-cli demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

COMFY_ENV := $(FUNART_CACHE_DIR)/comfyui-0.3.75
TEST_CHECKPOINT := $(FUNART_CACHE_DIR)/models/checkpoints/funart-test-sd15.safetensors

S_CLI := $(FUNART_CACHE_DIR)/npm-global/bin/s

install: $(VENV)/.installed comfyui checkpoint s-cli

comfyui:
	bash scripts/install-comfyui.sh "$(FUNART_CACHE_DIR)"

# The Serverless Devs CLI, for offline `s preview` of s.yaml in the tests.
s-cli: $(S_CLI)
$(S_CLI):
	npm install -g --prefix "$(FUNART_CACHE_DIR)/npm-global" --cache "$(FUNART_CACHE_DIR)/npm-cache" \
		--no-audit --no-fund @serverless-devs/s@3.1.10

# A 2.1 GB SD 1.5-layout checkpoint with random weights, built once (about 25 s).
checkpoint: $(VENV)/.installed comfyui
	$(VENV)/bin/funart model make-test-checkpoint --out "$(TEST_CHECKPOINT)" \
		--python "$(COMFY_ENV)/venv/bin/python" --comfyui-dir "$(COMFY_ENV)/ComfyUI"

demo: install
	$(VENV)/bin/python scripts/demo.py

# pytest exits 5 when it collected no tests: reported as a failure of its own.
test: install lint
	@$(VENV)/bin/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check funart_runtime handlers tests bench scripts
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/python bench/latency.py
	$(VENV)/bin/python bench/throughput.py
	$(VENV)/bin/python bench/load.py
	$(VENV)/bin/python bench/snapshots.py
	$(VENV)/bin/python bench/cold_start.py

clean:
	rm -rf $(VENV) .demo *.egg-info
