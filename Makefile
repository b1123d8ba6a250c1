# The README's two Quickstart commands: `make test` and `make demo`. .ci/run calls `make test`.
PY ?= python3
# torch 2.13.0 first: on CPU machines it is the CPU wheel, and a looser spec would pull CUDA packages.
PIP_TORCH = $(PY) -m pip install -q torch==2.13.0

.PHONY: install test demo

install:
	$(PIP_TORCH)
	$(PY) -m pip install -q -e ".[cpu,test]"

# Debian packages for the RTSP and browser tests are installed when we are root with apt-get;
# otherwise those tests skip and name the missing package.
test: install
	bash .ci/install-system-deps.sh
	$(PY) -m pytest

demo:
	$(PIP_TORCH)
	$(PY) -m pip install -q -e ".[cpu]"
	longwatch demo
