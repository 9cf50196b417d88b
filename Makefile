# Two entry points a newcomer needs (see README): `make demo` and `make test`.
# Both install what they need on a fresh Debian 12 machine (run as root).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEBS   := chrony gnutls-bin openssl pebble certbot man-db util-linux mount systemd procps openssh-server openssh-client iproute2 libbsd0 libcap2
# NTPsec for the tests: its package conflicts with chrony, so its .deb is fetched and extracted here
# (never installed); ntpd runs as user ntp, which only the package's postinst would create.
NTPSEC_DIR ?= /var/cache/ntspki/ntpsec

.PHONY: demo test lint debs ntpsec venv bench clean install uninstall

debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

ntpsec: $(NTPSEC_DIR)/root/usr/sbin/ntpd
	@getent passwd ntp >/dev/null || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ntp

$(NTPSEC_DIR)/root/usr/sbin/ntpd:
	mkdir -p $(NTPSEC_DIR)
	cd $(NTPSEC_DIR) && rm -f ntpsec_*.deb && (apt-get download ntpsec 2>/dev/null || (apt-get update -qq && apt-get download ntpsec))
	rm -rf $(NTPSEC_DIR)/root && dpkg-deb -x $(NTPSEC_DIR)/ntpsec_*.deb $(NTPSEC_DIR)/root
	chmod -R go+rX $(NTPSEC_DIR)
	touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'

demo: debs venv
	$(VENV)/bin/ntspki demo --dir ./demo

test: debs ntpsec venv lint
	$(PY) -m pytest -q

# ruff (lint + format check) and mypy over the product; CI fails on any finding.
lint: venv
	$(VENV)/bin/ruff check ntspki tests benchmarks
	$(VENV)/bin/ruff format --check ntspki tests benchmarks
	$(VENV)/bin/mypy

# ntspki in its own virtualenv (PREFIX/lib/ntspki/venv), `ntspki` in PREFIX/bin, man pages,
# shell completion and the systemd units (not enabled), recorded in PREFIX/lib/ntspki/install-manifest
# so that `make uninstall` (same PREFIX and DESTDIR) removes exactly that. See packaging/install.py.
PREFIX  ?= /usr/local
DESTDIR ?=
UNITDIR ?=

install:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { echo "make install: needs Python's venv (apt-get install python3-venv)" >&2; exit 1; }
	$(PYTHON) packaging/install.py install --prefix '$(PREFIX)' --destdir '$(DESTDIR)' --unitdir '$(UNITDIR)'

uninstall:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { echo "make install: needs Python's venv (apt-get install python3-venv)" >&2; exit 1; }
	$(PYTHON) packaging/install.py uninstall --prefix '$(PREFIX)' --destdir '$(DESTDIR)' --unitdir '$(UNITDIR)'

bench: debs venv
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo *.egg-info
