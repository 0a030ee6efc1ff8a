# Storyboard: every target sets itself up; `make demo` and `make test` are all a new user types.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

LLM             ?= openai
DATASET         ?= hmdb51
SAMPLES         ?= 2
CLIP_MODEL      ?= ViT-B-16
CLIP_PRETRAINED ?= openai
# `make demo-subtexts` scores HMDB-51 candidate sets with a CLIP you name, e.g.
# DEMO_CLIP_MODEL=ViT-B-16 DEMO_CLIP_PRETRAINED=openai (weights in the Hugging Face cache:
# docs/usage.md, "Weights on an offline GPU machine"); by default a shipped config, random weights.
DEMO_CLIP_MODEL      ?= storyboard_common/data/clip/TinyCLIP-test.json
DEMO_CLIP_PRETRAINED ?= none

PY_DIRS := storyboard_common subtext_gen trainer storyworld testkit tests bench

.PHONY: setup test test-all demo study demo-subtexts subtexts score show bench gpu-check lint clean

# TORCH=cpu (or a CUDA tag such as cu121) installs torch and torchvision from that index of
# PyTorch's own first, which the project then keeps: `make setup TORCH=cpu` on a machine
# without a GPU spares it PyPI's CUDA build (several GB). Unset: PyPI's default build.
TORCH ?=
TORCH_INDEX := https://download.pytorch.org/whl

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH),$(BIN)/pip install --quiet torch torchvision --index-url $(TORCH_INDEX)/$(TORCH))
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The suite less the end-to-end tests marked `slow` (torchrun ranks, the study, the wheel,
# the README's quickstart); `make test-all` runs every test.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m storyworld demo --out artifacts/demo

# The full study (84 minutes on 2 cores, measured; resumable): docs/study/results.json
# and README.md.
study: $(STAMP)
	$(BIN)/python -m storyworld study --work artifacts/study --out docs/study

demo-subtexts: $(STAMP)
	$(BIN)/python -m subtext_gen generate --llm file --classes storyboard_common/data/demo/classes.csv \
		--input storyboard_common/data/demo/candidates.json --out artifacts/demo-subtexts
	$(BIN)/python -m subtext_gen score --tpp --artifacts artifacts/demo-subtexts \
		--clip-model $(DEMO_CLIP_MODEL) --clip-pretrained $(DEMO_CLIP_PRETRAINED)
	$(BIN)/python -m subtext_gen show --artifacts artifacts/demo-subtexts

subtexts: $(STAMP)
	$(BIN)/python -m subtext_gen generate --llm $(LLM) --dataset $(DATASET) --samples $(SAMPLES)

score: $(STAMP)
	$(BIN)/python -m subtext_gen score --tpp --dataset $(DATASET) \
		--clip-model $(CLIP_MODEL) --clip-pretrained $(CLIP_PRETRAINED)

show: $(STAMP)
	$(BIN)/python -m subtext_gen show --dataset $(DATASET)

bench: $(STAMP)
	$(BIN)/python -m bench

# One prepared script for a GPU machine (under 8 minutes, no network): the training steps
# and the trainer's CLI end to end; needs a CUDA device (exits 2 without one), writes
# bench/gpu-check-<card>.json. Options through GPU_CHECK_ARGS, e.g.
# GPU_CHECK_ARGS="--only steps --model ViT-L-14" (python -m bench.gpu_check --help).
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check $(GPU_CHECK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

clean:
	rm -rf $(VENV) artifacts/demo artifacts/demo-subtexts .pytest_cache build *.egg-info
