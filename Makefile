# The README's two Quickstart commands: `make test` and `make demo`. .ci/run calls `make test`.
# Both create and use the virtual environment .venv in the checkout (a distribution's own Python is
# externally managed, PEP 668); PY is the interpreter that creates it: `make test PY=/usr/bin/python3`.
PY ?= python3
VENV ?= .venv
VPY = $(VENV)/bin/python
# torch 2.13.0 first: on CPU machines it is the CPU wheel, and a looser spec would pull CUDA packages.
PIP_TORCH = $(VPY) -m pip install -q torch==2.13.0

.PHONY: venv install test demo bench-cpu bench-gpu bench-accuracy train-needle-tiny

# .venv, with PY's venv module (installed with apt-get when root and missing; otherwise one line says what to install)
venv:
	@bash .ci/make-venv.sh "$(PY)" "$(VENV)"

# lmms-eval (tests/test_eval_lmms.py runs its CLI) with --no-deps: its declared dependencies pull a CUDA torch.
install: venv
	$(PIP_TORCH)
	$(VPY) -m pip install -q -e ".[cpu,test]"
	$(VPY) -m pip install -q --no-deps -r .ci/lmms-eval.txt

# Debian packages for the RTSP and browser tests are installed when we are root with apt-get; a package
# that cannot be installed stops the run under CI (CI set), and elsewhere leaves a warning and tests that
# skip naming it (under CI those skips fail, tests/conftest.py). Then: the structural lint (private members,
# import direction), the test suite, and the built wheel installed into a fresh venv outside the checkout.
test: install
	bash .ci/install-system-deps.sh
	bash .ci/lint.sh "$(VENV)"
	$(VPY) -m pytest
	bash .ci/check-wheel.sh "$(PY)"

demo: venv
	$(PIP_TORCH)
	$(VPY) -m pip install -q -e ".[cpu]"
	$(VENV)/bin/longwatch demo

# The README's benchmark figures, written to eval/results/ where the README cites them (without --out,
# results go to ./runs). CPU: the tiny preset (speed, retrieval, memory, fidelity, eval report);
# GPU: random-8b in bf16 at 448x448 (needs a CUDA machine).
LW = $(VENV)/bin/longwatch
FIGURES = eval/results

bench-cpu: install
	$(LW) bench speed --model tiny --frame-size 224 --minutes 1,10,30,60 --policy full,sliding,rekv,infinipot,streammem --device-budget 64MB --out $(FIGURES)
	$(LW) bench speed --model tiny --frame-size 224 --minutes 5 --policy rekv --streams 1,4 --device-budget 64MB --name speed_tiny_cpu_streams --out $(FIGURES)
	$(LW) bench retrieval --blocks 1000,5000,15000 --out $(FIGURES)
	$(LW) bench memory --model tiny --minutes 10 --policy rekv --frame-size 224 --device-budget 8MB --host-budget 16MB --disk-budget 32MB --out $(FIGURES)
	$(LW) bench memory --model tiny --minutes 10 --policy infinipot --frame-size 224 --device-budget 8MB --out $(FIGURES)
	$(LW) bench fidelity --model tiny --minutes 3 --frame-size 224 --window 4 --retrieve 4 --device-budget 8MB --policy full,sliding,rekv,infinipot,streammem --out $(FIGURES)
	$(LW) make-bench --preset smoke --seed 0 --out runs/needlestream-smoke
	$(LW) eval --bench runs/needlestream-smoke --policy full,sliding,rekv,infinipot,streammem --frame-size 224 --fidelity --out $(FIGURES)/needlestream_smoke
	$(LW) eval --bench runs/needlestream-smoke --policy sliding,infinipot,streammem --budget 2MB,2.5MB,3MB,4MB,8MB --window 2 --frame-size 224 --fidelity --out $(FIGURES)/needlestream_smoke_budgets

bench-gpu: venv
	$(PIP_TORCH)
	$(VPY) -m pip install -q -e ".[gpu,test]"
	$(LW) bench speed --model random-8b --device cuda --frame-size 448 --minutes 10,60,240 --policy rekv,full --device-budget 24GiB --host-budget 96GiB --out $(FIGURES)
	$(LW) bench speed --model random-8b --device cuda --frame-size 448 --minutes 10 --policy rekv --streams 30 --device-budget 1GiB --host-budget 2GiB --name speed_random-8b_cuda_30streams --out $(FIGURES)
	$(LW) bench retrieval --device cuda --blocks 1000,10000,15000 --out $(FIGURES)
	$(VPY) -m pytest -m gpu

# needle-tiny's accuracy figures in the README: held-out NeedleStream tiny seed 1 (200 videos; never a
# training video), every family with the README's budgets (a 4-patch window, 4 retrieved; 2.5 MiB device
# and 50 MB disk for the five after rekv), picked choices, the single-sign floor, streaming vs one
# forward, and the watch bench (after `make install`). One report per target, each marked done by an
# untracked .done file when it finished, so `make -j2 bench-accuracy` runs two at a time and a rerun
# makes only what is not done yet; MODEL= a trained file (`longwatch train` prints it) measures that
# instead of the shipped checkpoint, ACC= and WATCH= where the reports go (default: over the committed ones).
MODEL ?= needle-tiny
ACC ?= $(FIGURES)/needle_tiny_eval
WATCH ?= $(FIGURES)/watch
HELDOUT = runs/needlestream-tiny-s1
SINGLE = runs/needlestream-tiny-single-s1
EVAL_TINY = $(LW) eval --config configs/needle-tiny.yaml --model $(MODEL) --window 4 --retrieve 4 --compact --no-progress
CAPPED = infinipot streammem livevlm streamchat videorag
ACCURACY = $(ACC)/tiny-heldout-s1-full200 $(foreach p,sliding rekv $(CAPPED),$(ACC)/tiny-heldout-s1-$(p)-200) \
	$(foreach p,full rekv sliding,$(ACC)/tiny-heldout-s1-$(p)-choices200) $(ACC)/tiny-single-heldout-s1-200 \
	$(ACC)/tiny-heldout-s1-offline200

bench-accuracy: $(addsuffix /.done,$(ACCURACY)) $(WATCH)/.done-$(notdir $(MODEL))

$(HELDOUT)/annotations.json:
	$(LW) make-bench --preset tiny --seed 1 --out $(HELDOUT)

$(SINGLE)/annotations.json:
	$(LW) make-bench --preset tiny-single --seed 1 --videos 200 --out $(SINGLE)

$(ACC)/tiny-heldout-s1-full200/.done: | $(HELDOUT)/annotations.json
	$(EVAL_TINY) --bench $(HELDOUT) --policy full --out $(@D) && touch $@

$(ACC)/tiny-heldout-s1-%-choices200/.done: | $(HELDOUT)/annotations.json
	$(EVAL_TINY) --bench $(HELDOUT) --policy $* --choices text --out $(@D) && touch $@

$(ACC)/tiny-heldout-s1-%-200/.done: | $(HELDOUT)/annotations.json
	$(EVAL_TINY) --bench $(HELDOUT) --policy $* $(if $(filter $*,$(CAPPED)),--budget 2.5MiB --disk-budget 50MB) --out $(@D) && touch $@

$(ACC)/tiny-single-heldout-s1-200/.done: | $(SINGLE)/annotations.json
	$(EVAL_TINY) --bench $(SINGLE) --policy full,sliding,rekv --out $(@D) && touch $@

$(ACC)/tiny-heldout-s1-offline200/.done: | $(HELDOUT)/annotations.json
	$(LW) bench offline --config configs/needle-tiny.yaml --bench $(HELDOUT) --model $(MODEL) --json --out $(@D) && touch $@

# the watch bench exits 1 when its targets are missed: a figure all the same, so it does not stop the run
$(WATCH)/.done-$(notdir $(MODEL)):
	$(LW) bench watch --model $(MODEL) --videos 20 --out $(@D); touch $@

# The shipped needle-tiny's whole recipe (checkpoint v2; README, needle-tiny): the seeing-first curriculum
# from scratch (`base`, checkpoint v1), then six fine-tunes chained from it with watch steps and the
# training-only shape read-out (s6..s11, the commands of eval/results/needle_tiny_train/ft_*_run.json),
# and the shipped file is the mean of the last two (`longwatch average-weights`).
# Each stage's file exists only once that stage finished, and `longwatch train` resumes a stage from its
# own --out, so a rerun after an interrupt goes on where it stopped. RECIPE= where the stages go.
RECIPE ?= runs/train/recipe
THREADS ?= 2
FINE_TUNE = $(LW) train --preset needle-tiny --threads $(THREADS) --warmup 30 --glimpse-steps 0 --glimpse-share 0.1 \
	--shape-aux 1.0

train-needle-tiny: $(RECIPE)/needle-tiny.safetensors

$(RECIPE)/needle-tiny.safetensors: $(RECIPE)/s10/needle-tiny.safetensors $(RECIPE)/s11/needle-tiny.safetensors
	$(LW) average-weights $^ --out $@

$(RECIPE)/base/needle-tiny.safetensors:
	$(LW) train --preset needle-tiny --seed 0 --threads $(THREADS) --steps 3600 --glimpse-share 0.2 --clip-share 0.3 \
		--watch-share 0 --shape-aux 0 --out $(@D)

$(RECIPE)/s6/needle-tiny.safetensors: $(RECIPE)/base/needle-tiny.safetensors
	$(FINE_TUNE) --seed 6 --init $< --steps 1200 --lr 5e-4 --clip-share 0.15 --watch-share 0.45 --out $(@D)

$(RECIPE)/s7/needle-tiny.safetensors: $(RECIPE)/s6/needle-tiny.safetensors
	$(FINE_TUNE) --seed 7 --init $< --steps 1500 --lr 5e-4 --clip-share 0.1 --watch-share 0.6 --out $(@D)

$(RECIPE)/s8/needle-tiny.safetensors: $(RECIPE)/s7/needle-tiny.safetensors
	$(FINE_TUNE) --seed 8 --init $< --steps 1000 --lr 3e-4 --clip-share 0.3 --watch-share 0.3 --out $(@D)

$(RECIPE)/s9/needle-tiny.safetensors: $(RECIPE)/s8/needle-tiny.safetensors
	$(FINE_TUNE) --seed 9 --init $< --steps 1500 --lr 3e-4 --clip-share 0.25 --watch-share 0.45 --out $(@D)

$(RECIPE)/s10/needle-tiny.safetensors: $(RECIPE)/s9/needle-tiny.safetensors
	$(FINE_TUNE) --seed 10 --init $< --steps 1500 --lr 2e-4 --clip-share 0.25 --watch-share 0.45 --out $(@D)

$(RECIPE)/s11/needle-tiny.safetensors: $(RECIPE)/s10/needle-tiny.safetensors
	$(FINE_TUNE) --seed 11 --init $< --steps 1500 --lr 3e-4 --clip-share 0.2 --watch-share 0.25 --drill-share 0.3 --out $(@D)
