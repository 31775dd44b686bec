# Two commands on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
PORT    ?= 8501

.PHONY: run test test-fast checkpoints clean

$(STAMP): requirements.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(DEVSTAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

run: $(STAMP)
	$(BIN)/streamlit run streamlit_app.py --server.port $(PORT)

test: $(DEVSTAMP)
	$(BIN)/python -m pytest -q

# Unit tests only (no browser)
test-fast: $(DEVSTAMP)
	$(BIN)/python -m pytest -q --ignore=tests/e2e

# Re-create the shipped checkpoints exactly as documented in checkpoints/README.md
checkpoints: $(STAMP)
	$(BIN)/python -m vae_core train --dataset digits --latent-dim 2 --epochs 100 --batch-size 64 --out checkpoints/digits-2d.safetensors --overwrite
	$(BIN)/python -m vae_core train --dataset fashion-mnist --latent-dim 2 --epochs 50 --out checkpoints/fashion-mnist-2d.safetensors --overwrite

clean:
	rm -rf $(VENV) .pytest_cache
