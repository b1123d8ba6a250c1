# The README's two Quickstart commands: `make test` and `make demo`. .ci/run calls `make test`.
PY ?= python3
# torch 2.13.0 first: on CPU machines it is the CPU wheel, and a looser spec would pull CUDA packages.
PIP_TORCH = $(PY) -m pip install -q torch==2.13.0

.PHONY: install test demo bench-cpu bench-gpu

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

# The README's benchmark figures. CPU: the tiny preset (speed, retrieval, memory, fidelity, eval report); GPU: random-8b in bf16 at 448x448 (needs a CUDA machine).
bench-cpu:
	$(PY) -m app bench speed --model tiny --frame-size 224 --minutes 1,10,30,60 --policy full,sliding,rekv,infinipot,streammem --device-budget 64MB
	$(PY) -m app bench speed --model tiny --frame-size 224 --minutes 5 --policy rekv --streams 1,4 --device-budget 64MB --name speed_tiny_cpu_streams
	$(PY) -m app bench retrieval --blocks 1000,5000,15000
	$(PY) -m app bench memory --model tiny --minutes 10 --policy rekv --frame-size 224 --device-budget 8MB --host-budget 16MB --disk-budget 32MB
	$(PY) -m app bench memory --model tiny --minutes 10 --policy infinipot --frame-size 224 --device-budget 8MB
	$(PY) -m app bench fidelity --model tiny --minutes 3 --frame-size 224 --window 4 --retrieve 4 --device-budget 8MB --policy full,sliding,rekv,infinipot,streammem
	$(PY) -m app make-bench --preset smoke --seed 0 --out runs/needlestream-smoke
	$(PY) -m app eval --bench runs/needlestream-smoke --policy full,sliding,rekv,infinipot,streammem --frame-size 224 --fidelity --out eval/results/needlestream_smoke
	$(PY) -m app eval --bench runs/needlestream-smoke --policy sliding,infinipot,streammem --budget 2MB,2.5MB,3MB,4MB,8MB --window 2 --frame-size 224 --fidelity --out eval/results/needlestream_smoke_budgets

bench-gpu:
	$(PY) -m app bench speed --model random-8b --device cuda --frame-size 448 --minutes 10,60,240 --policy rekv,full --device-budget 24GiB --host-budget 96GiB
	$(PY) -m app bench speed --model random-8b --device cuda --frame-size 448 --minutes 10 --policy rekv --streams 30 --device-budget 1GiB --host-budget 2GiB --name speed_random-8b_cuda_30streams
	$(PY) -m app bench retrieval --device cuda --blocks 1000,10000,15000
	$(PY) -m pytest -m gpu
