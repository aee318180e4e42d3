# deepmatch: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Real data root (../shared/data beside a checkout here); the embedded MNIST test set needs none.
export DEEPMATCH_DATA ?= $(abspath ../shared/data)
ARGS ?=
QUICK ?= 0
PUBLISH := $(if $(filter 1 true yes,$(QUICK)),benchmark.quick=true,benchmark.publish_dir=$(CURDIR)/benchmarks/results)
# the descriptor tables' `leave-one-out mean` column: the published leave-one-out table
LOO_TABLE := benchmark.loo_table=$(CURDIR)/benchmarks/results/descriptors_loo.json

.DEFAULT_GOAL := help

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}'

install: ## create $(VENV) and install deepmatch (editable) with the dev, sweep and slurm extras
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,sweep,slurm]" $(PIP_CONSTRAINTS)
	$(PY) -c "import torch, torchvision, lightning, hydra, cv2; print('deepmatch installed$(if $(PIP_CONSTRAINTS), (locked),): torch', torch.__version__, '| cuda', torch.cuda.is_available())"

install-locked: ## as install, but at the exact versions of requirements-lock.txt (the software behind the published descriptors rows)
	$(MAKE) install PIP_CONSTRAINTS="-c requirements-lock.txt"

test: ## fast test suite (CPU, < 10 min on 2 cores)
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-full: ## every test, the slow ones too
	$(PY) -m pytest -q $(ARGS)

demo: ## train + test the search-path matcher on Translated MNIST from the embedded MNIST test set (no download)
	$(PY) -m benchmarks.train experiment=regionsearch/demo $(ARGS)

train: ## train anything: make train ARGS="experiment=regionsearch/cluttered trainer=gpu"
	$(PY) -m benchmarks.train $(ARGS)

benchmark: benchmark-regionsearch benchmark-regionsearch-speed benchmark-regionsearch-real benchmark-patch-eval benchmark-descriptors benchmark-descriptors-loo benchmark-descriptors-heldout benchmark-retrieval benchmark-search ## every benchmark suite (QUICK=1 for smoke runs)

benchmark-quick: ## smoke run of every suite in a few minutes
	$(MAKE) benchmark QUICK=1

benchmark-regionsearch: ## the region-search table: matcher vs NCC/MTM/BBS/exhaustive CNN (QUICK=1: minutes)
	$(PY) -m benchmarks.run benchmark=regionsearch $(PUBLISH) $(ARGS)

benchmark-regionsearch-speed: ## region-search speed only: search path eager / compiled vs NCC/MTM/BBS on the same pairs (minutes)
	$(PY) -m benchmarks.run benchmark=regionsearch_speed $(PUBLISH) $(ARGS)

benchmark-regionsearch-real: ## region search on real photos: BBS105, SSD/NCC/ZNCC/BBS/DDIS/deep ZNCC/QATM vs published AUCs (QUICK=1: 20 pairs at 240 px, a few minutes)
	$(PY) -m benchmarks.run benchmark=regionsearch_real $(PUBLISH) $(ARGS)

benchmark-patch-eval: ## HPatches three tasks on real sequences: our evaluator vs the official logic, SIFT (QUICK=1)
	$(PY) -m benchmarks.run benchmark=patch_eval $(PUBLISH) $(ARGS)

benchmark-descriptors: ## patch descriptors: every method trained on real patches vs SIFT/RootSIFT, FPR95, HPatches mAP, speed vs kornia (QUICK=1)
	$(PY) -m benchmarks.run benchmark=descriptors $(PUBLISH) $(LOO_TABLE) $(ARGS)

benchmark-descriptors-loo: ## patch descriptors, leave-one-sequence-out over the 7 real sequences: FPR95 per fold and mean (QUICK=1: 3 folds)
	$(PY) -m benchmarks.run benchmark=descriptors_loo $(PUBLISH) $(ARGS)

benchmark-descriptors-heldout: ## patch descriptors trained on the real sequences + tracks, tested on v_churchill: 3 seeds, HPatches columns (QUICK=1)
	$(PY) -m benchmarks.run benchmark=descriptors_heldout $(if $(filter 1 true yes,$(QUICK)),benchmark.quick=true,benchmark.publish_dir=$(CURDIR)/benchmarks/results/descriptors_heldout) $(LOO_TABLE) $(ARGS)

benchmark-retrieval: ## image retrieval: poolings / PCAw / QE / regional attention on FlickrLogos-27 + COIL-100 (QUICK=1: ~3 min)
	$(PY) -m benchmarks.run benchmark=retrieval $(PUBLISH) $(ARGS)

benchmark-search: ## nearest-neighbour search at 10k/100k/1M: brute-force matmul vs faiss (QUICK=1)
	$(PY) -m benchmarks.run benchmark=search $(PUBLISH) $(ARGS)

gpu-prepare: ## wheels (.whl/) and a real-data subset (.gpu-carry/) for a bare offline GPU machine; prints the device command
	benchmarks/prepare_gpu_carry.sh $(PY)

gpu-check: ## train + time every family on the GPU, CPU numbers beside (DEVICE=cpu ARGS=--tiny for the CPU path; PUBLISH=1 writes benchmarks/results/gpu.*)
	DEVICE=$(or $(DEVICE),cuda) $(PY) -m benchmarks.gpu_check $(if $(filter 1 true yes,$(PUBLISH)),--publish) $(ARGS)

sweep-example: ## an Optuna sweep (4 short trials) of the matcher on Translated MNIST
	$(PY) -m benchmarks.train -m hparams_search=regionsearch_optuna experiment=regionsearch/demo hydra.sweeper.n_trials=4 trainer.max_epochs=1 logger=csv $(ARGS)

lint: ## ruff
	$(PY) -m ruff check core regionsearch descriptors retrieval benchmarks tests

format: ## ruff format + import sort
	$(PY) -m ruff check --fix --select I core regionsearch descriptors retrieval benchmarks tests
	$(PY) -m ruff format core regionsearch descriptors retrieval benchmarks tests

clean: ## remove caches and run outputs (not the venv)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

clean-cache: ## remove generated canvases and pair caches
	rm -rf $${DEEPMATCH_CACHE:-$$HOME/.cache/deepmatch}

.PHONY: help install install-locked test test-full demo train benchmark benchmark-quick benchmark-regionsearch benchmark-regionsearch-speed benchmark-regionsearch-real benchmark-patch-eval benchmark-retrieval benchmark-search benchmark-descriptors benchmark-descriptors-loo benchmark-descriptors-heldout gpu-prepare gpu-check sweep-example lint format clean clean-cache
