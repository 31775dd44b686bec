# Two commands on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
PORT    ?= 8501

.PHONY: run test test-fast checkpoints screenshots bench clean

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(DEVSTAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

run: $(STAMP)
	$(BIN)/streamlit run serve.py --server.port $(PORT)

test: $(DEVSTAMP)
	$(BIN)/python -m pytest -q

# Unit tests only (no browser)
test-fast: $(DEVSTAMP)
	$(BIN)/python -m pytest -q --ignore=tests/e2e

# Re-create the shipped checkpoints exactly as documented in checkpoints/README.md, and their stored first pictures
checkpoints: $(STAMP)
	$(BIN)/python -m vae_core train --dataset digits --latent-dim 2 --epochs 100 --batch-size 64 --lr 1e-3 --out checkpoints/digits-2d.safetensors --overwrite
	$(BIN)/python -m vae_core train --dataset fashion-mnist --latent-dim 2 --epochs 50 --batch-size 128 --lr 1e-3 --out checkpoints/fashion-mnist-2d.safetensors --overwrite
	$(BIN)/python -m vae_core previews

# Re-create the README's page screenshots from the browser tests
SHOTS := overview latent_first_paint latent_hover latent_images latent_selection latent_two_models decoder_grid anomalies train_running collapse_lab collapse_rd_plane collapse_kl_heatmap latent_drawn anomalies_new_data zip_colour_decoder collapse_rd_all_cures replay_epoch_first replay_epoch_last collapse_ppca_panel train_collapse_notice
screenshots: $(DEVSTAMP)
	$(BIN)/python -m pytest -q tests/e2e
	mkdir -p docs/screenshots
	for s in $(SHOTS); do cp tests/e2e/screenshots/$$s.png docs/screenshots/; done

# The benchmarks behind the README's performance table (each prints one JSON object last)
bench: $(DEVSTAMP)
	for b in train_speed quality tsne app sweep classroom class_browsers estimates celeba map; do $(BIN)/python -m bench.$$b --json; done

clean:
	rm -rf $(VENV) .pytest_cache
