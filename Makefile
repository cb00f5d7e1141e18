# Two entry points for a fresh machine (see README): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TFLITE_VENV := .venv-tflite
PY36_VENV := .venv-py36
# The Jetson Nano's Python (JetPack 4.6); CI's image has it under pyenv, the same path as here.
PY36 ?= $(HOME)/.pyenv/versions/3.6.15/bin/python

.PHONY: run test venv clean-venv ssh-tools diff-size

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

# The runtime on Python 3.6 with the newest cp36 wheels: numpy 1.19.5, onnxruntime 1.10.0 (the last for 3.6;
# no tflite-runtime wheel for cp36 with signature runners exists), pytest 7.0.1 (the last for 3.6).
# Skipped, with the reason, where that interpreter is absent; tests/test_runtime_py36.py drives it.
$(PY36_VENV)/.installed:
	@if [ -x "$(PY36)" ]; then \
		$(PY36) -m venv $(PY36_VENV) && \
		$(PY36_VENV)/bin/pip install -q "pip==21.3.1" && \
		$(PY36_VENV)/bin/pip install -q numpy==1.19.5 onnxruntime==1.10.0 pytest==7.0.1 && touch $@; \
	else echo "no Python 3.6 at $(PY36): the Python 3.6 runtime tests will be skipped"; fi

venv: $(VENV)/.installed

# The main job on the shipped default: compile it for this machine, verify the bundle's golden vectors,
# and end with the per-level table: MACs, CIFAR-10 test accuracy (recorded) and latency measured here.
# Built into runs/ (ignored): rebuilding the shipped artifacts/host-cpu would drop the profile measured for
# it and swap its golden images (built from CIFAR-10 test images) for generated ones.
RUN_BUNDLE := runs/host-cpu
run: $(VENV)/.installed
	$(PY) build.py --target host-cpu --out $(RUN_BUNDLE)
	$(PY) -m runtime verify $(RUN_BUNDLE)
	$(PY) -m runtime run $(RUN_BUNDLE) --runs 200

# The deploy test starts a real ssh server on loopback: Debian's openssh-server and rsync.
ssh-tools:
	@if ! [ -x /usr/sbin/sshd ] || ! command -v rsync >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq openssh-server rsync >/dev/null; fi

test: $(VENV)/.installed $(TFLITE_VENV)/.installed $(PY36_VENV)/.installed ssh-tools
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV) $(TFLITE_VENV) $(PY36_VENV)

# What a submission's commits add up to as diffs, binary files as git's base85 patches (the limit is 256 MiB).
# A retrained model changes every weight, so each engine file counts about 2.5x its size (old and new, base85):
# docs/artifacts.md has the arithmetic. Usage: make diff-size BASE=<the last commit that landed>
diff-size:
	@test -n "$(BASE)" || { echo "error: give BASE=<commit>, the last commit that landed (git log)"; exit 2; }
	@git log -p --binary --format= $(BASE)..HEAD | wc -c | \
		awk '{ printf "%.1f MiB of diffs in $(BASE)..HEAD (limit 256 MiB)\n", $$1 / 1048576 }'
