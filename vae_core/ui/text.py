"""Text from users (file names, labels, dataset names read from a checkpoint, messages quoting them) made safe to
show with Streamlit's Markdown."""
from __future__ import annotations

import re

_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>$&~]|:(?=//))")  # tags, links, emphasis, code, formulas, URLs
_MARKDOWN_BLOCK = re.compile(r"^(\s*)([#>+\-]|\d+[.)])")  # a heading, quote or list marker at the start


def plain(text) -> str:
    """`text` made safe to put inside st.markdown / st.error / st.caption: the Markdown, HTML and
    Streamlit-directive characters (and the colon of a URL's "://") are backslash-escaped, so the text shows
    literally and is never parsed as a tag, link, image, emphasis, colour directive or formula. Newlines become
    spaces."""
    text = _MARKDOWN_INLINE.sub(r"\\\1", " ".join(str(text).split()))
    return _MARKDOWN_BLOCK.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)


def sentence(text) -> str:
    """`text` as a sentence that another can follow: stripped, with a full stop unless it already ends one
    (so "… it is truncated" + " Upload …" never runs together)."""
    text = " ".join(str(text).split())
    return text if not text or text[-1] in ".!?…" or text.endswith((".)", ".”")) else text + "."
