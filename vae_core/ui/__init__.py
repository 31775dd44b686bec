"""The app's Streamlit layer — the only part of vae_core that imports streamlit. Pages import its modules:

- `state`: who this browser is, the models to choose from, the active model and its data, `?model=`, forms;
- `cache`: cached loaders and per-model computations;
- `jobs`: observing background work (runs, t-SNE, IWAE) with live progress;
- `widgets`: the sidebar, the error guard, headers, uploads, the missing-data panel;
- `text`: escaping user text for Markdown.
"""
