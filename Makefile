# Two entry points for a fresh machine (see README): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TFLITE_VENV := .venv-tflite

.PHONY: run test venv clean-venv ssh-tools

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

# The oldest runtime the bundles promise to load on (tflite-runtime 2.14 needs numpy < 2).
$(TFLITE_VENV)/.installed:
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/pip install -q tflite-runtime==2.14.0 numpy==1.26.4
	touch $@

venv: $(VENV)/.installed

# The main job on the shipped default: compile it for this machine and verify the bundle's golden vectors.
run: $(VENV)/.installed
	$(PY) build.py --target host-cpu
	$(PY) -m runtime verify artifacts/host-cpu

# The deploy test starts a real ssh server on loopback: Debian's openssh-server and rsync.
ssh-tools:
	@if ! [ -x /usr/sbin/sshd ] || ! command -v rsync >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq openssh-server rsync >/dev/null; fi

test: $(VENV)/.installed $(TFLITE_VENV)/.installed ssh-tools
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV) $(TFLITE_VENV)
