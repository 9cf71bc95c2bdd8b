"""Text handling that needs no model: sentence segmentation for long text, Markdown read as speech."""

from __future__ import annotations

from inference.text.markdown import speakable_markdown
from inference.text.segment import split_sentences

__all__ = ["speakable_markdown", "split_sentences"]
