# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install browser demo test bench eval clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mimicry demo

# Headless Chromium for the report tests (Debian's packages; installed as root).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the report tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; \
	else echo "note: headless Chromium is missing and this is not root: the browser tests will fail (MIMICRY_ALLOW_NO_BROWSER=1 skips them)"; fi

test: install browser
	$(PY) -m pytest -q

bench: install
	$(PY) scripts/bench_embed.py --repeats 5
	$(PY) scripts/bench_decode.py --repeats 5

clean:
	rm -rf demo-output eval-output .pytest_cache
