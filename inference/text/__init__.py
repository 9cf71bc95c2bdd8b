"""Text handling that needs no model: sentence segmentation for long text."""

from __future__ import annotations

from inference.text.segment import split_sentences

__all__ = ["split_sentences"]
