# Two commands on a fresh machine with python3 + pip: `make demo` and `make test`.
# Each bootstraps uv (pinned), then the locked environment (.venv, from uv.lock).
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(HOME)/.local/bin/uv)
PRESET ?= default

.PHONY: setup demo test clean

$(HOME)/.local/bin/uv:
	python3 -m pip install --user --quiet uv==$(UV_VERSION) \
	  || python3 -m pip install --user --quiet --break-system-packages uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python 3.11
	touch $@

setup: .venv/.synced

demo: setup
	$(UV) run --frozen --no-sync ammkd demo --preset $(PRESET)

test: setup
	$(UV) run --frozen --no-sync pytest

clean:
	rm -rf .venv runs bundles .pytest_cache
