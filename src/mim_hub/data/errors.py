"""The two kinds of failure the data layer knows: a dataset that cannot be used at all
(`DatasetError`, shown to the user with exit code 2) and one image that cannot be read
(`IMAGE_ERRORS`, handled by the bad-image policy in `bad_images.py`)."""

from __future__ import annotations

import struct
import zlib

from PIL import Image


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says what is wrong and how to fix it."""


# errors that mean "this image cannot be read" (anything else is a bug and propagates)
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError,
                IndexError, KeyError)


class BadImage(Exception):
    """An item whose image cannot be read; `error` says why."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error
