"""Model cards and Hub helpers."""

from .cards import METHOD_INFO, render_model_card, write_model_card

__all__ = ["METHOD_INFO", "render_model_card", "write_model_card"]
