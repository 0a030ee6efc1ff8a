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
# The demo brings its own CLIP: a tiny config with random weights unless you pass real ones,
# e.g. `make demo DEMO_CLIP_MODEL=ViT-B-16 DEMO_CLIP_PRETRAINED=openai` with cached weights.
DEMO_CLIP_MODEL      ?= data/clip/TinyCLIP-test.json
DEMO_CLIP_PRETRAINED ?= none

.PHONY: setup test demo subtexts score show bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m subtext_gen generate --llm file --classes data/demo/classes.csv \
		--input data/demo/candidates.json --out artifacts/demo
	$(BIN)/python -m subtext_gen score --tpp --artifacts artifacts/demo \
		--clip-model $(DEMO_CLIP_MODEL) --clip-pretrained $(DEMO_CLIP_PRETRAINED)
	$(BIN)/python -m subtext_gen show --artifacts artifacts/demo
	@echo "Artifacts: artifacts/demo/ (candidates.parquet, <clip-tag>/tpp.parquet, <clip-tag>/subtexts.parquet)"
	@if [ "$(DEMO_CLIP_PRETRAINED)" = "none" ]; then echo "Note: the demo CLIP has random weights, so these TPP values exercise the pipeline but say nothing about text quality; pass DEMO_CLIP_MODEL=ViT-B-16 DEMO_CLIP_PRETRAINED=openai (weights in the Hugging Face cache) for real scores."; fi

subtexts: $(STAMP)
	$(BIN)/python -m subtext_gen generate --llm $(LLM) --dataset $(DATASET) --samples $(SAMPLES)

score: $(STAMP)
	$(BIN)/python -m subtext_gen score --tpp --dataset $(DATASET) \
		--clip-model $(CLIP_MODEL) --clip-pretrained $(CLIP_PRETRAINED)

show: $(STAMP)
	$(BIN)/python -m subtext_gen show --dataset $(DATASET)

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check subtext_gen trainer tests bench

clean:
	rm -rf $(VENV) artifacts/demo .pytest_cache
