# `make test` on a fresh clone creates .venv and installs the project first.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: venv test lint demo

venv: $(VENV)/.installed

# Reinstall whenever pyproject.toml changes; the stamp records the last install.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

# The whole suite (what CI runs). The quick loop leaves out the tests marked slow
# (processes, the wheel, the browser, seconds of a real Huey consumer) but keeps all three
# databases:
#   make test PYTEST_ARGS="-m 'not slow'"
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy flask_geneva

demo: venv
	$(PY) -m demo_app
