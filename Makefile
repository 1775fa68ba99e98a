# `make test` on a fresh clone creates .venv and installs the project first.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The browser tests drive this Chromium; without it they skip (and fail with CI=true).
CHROMIUM := /usr/bin/chromium

.PHONY: venv demo-venv test lint demo

venv: $(VENV)/.installed

# Reinstall whenever pyproject.toml changes; the stamp records the last install.
# The development tools (test runner, linters, browser driver, database drivers).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

# The demo needs the library and its dependencies only (the demo app is in this checkout),
# nothing of '.[dev]'. After `make test` it finds them installed already.
demo-venv: $(VENV)/.demo-installed

$(VENV)/.demo-installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -e .
	touch $@

# The whole suite (what CI runs). The quick loop leaves out the tests marked slow
# (processes, the wheel, the browser, seconds of a real Huey consumer) but keeps all three
# databases:
#   make test PYTEST_ARGS="-m 'not slow'"
test: venv
	@test -x $(CHROMIUM) || echo "note: no Chromium at $(CHROMIUM): the browser tests" \
		"(tests/admin/test_admin_browser.py) will skip; install it (apt-get install chromium)" \
		"to run them. With CI=true they fail instead."
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy flask_geneva

demo: demo-venv
	$(PY) -m demo_app
