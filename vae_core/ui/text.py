"""Text from users (file names, labels, dataset names read from a checkpoint, messages quoting them) made safe to
show with Streamlit's Markdown."""
from __future__ import annotations

import re

_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>$&~])")  # tags, links, images, emphasis, code, formulas, entities
_MARKDOWN_BLOCK = re.compile(r"^(\s*)([#>+\-]|\d+[.)])")  # a heading, quote or list marker at the start
# Streamlit finds links ("http://", "www.", "a@b.co"), colours (":red[…]", ":small"), icons (":material/x:") and
# emoji (":smile:") in the text after the escapes are read, so a backslash cannot stop them: a word joiner
# (U+2060, invisible) goes where it breaks their pattern.
_TEXT_PATTERNS = re.compile(r"(?<=:)(?=[\w+\-/])|(?<=@)(?=\w)|(?<=[wW]{3})(?=\.)")
WORD_JOINER = "\u2060"


def plain(text) -> str:
    """`text` made safe to put inside st.markdown / st.error / st.caption / a label: the Markdown and HTML
    characters are backslash-escaped and Streamlit's own patterns broken by an invisible character, so it shows
    literally and is never parsed as a tag, link, image, emphasis, colour directive, icon, emoji or formula.
    Newlines become spaces. (Not for inside a `code span`, where escapes show.)"""
    text = _MARKDOWN_INLINE.sub(r"\\\1", " ".join(str(text).split()))
    text = _TEXT_PATTERNS.sub(WORD_JOINER, text)
    return _MARKDOWN_BLOCK.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)


def sentence(text) -> str:
    """`text` as a sentence that another can follow: stripped, with a full stop unless it already ends one
    (so "… it is truncated" + " Upload …" never runs together)."""
    text = " ".join(str(text).split())
    return text if not text or text[-1] in ".!?…" or text.endswith((".)", ".”")) else text + "."
