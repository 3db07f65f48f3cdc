# The two set-up-and-run commands of the README:
#   make demo   -> creates .venv, installs the locked environment, runs `mutualctr demo`
#   make test   -> creates .venv, installs the locked environment, runs the test suite
# requirements.lock pins every package of the environment with its hashes (pip-compile from
# requirements.in; `make lock` re-resolves it). See docs/install.md.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
LOCKENV := build/lockenv
PIP_TOOLS := pip-tools==7.6.2

.PHONY: demo test bench venv lock clean

# --no-deps: exactly the lock, nothing resolved on top; `pip check` fails if the lock misses a dependency.
# --no-build-isolation: the editable install builds with the locked setuptools, not a fresh download.
$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r requirements.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mutualctr demo $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks.run $(ARGS)

# Re-resolve requirements.lock from requirements.in (reads the package index; run it where pip
# finds the torch 2.13.0 CPU wheel, as on the project's machines).
lock:
	test -x $(LOCKENV)/bin/pip-compile || ($(PY) -m venv $(LOCKENV) && $(LOCKENV)/bin/pip install -q $(PIP_TOOLS))
	$(LOCKENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links -o requirements.lock requirements.in

clean:
	rm -rf $(VENV)
