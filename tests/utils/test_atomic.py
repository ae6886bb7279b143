"""One way to write atomically (utils/atomic.py): `atomic_folder` for folders, `atomic_file` for
one file, used by every writer (conversion, pre-training's final save, the colour-noise cache)."""

import os

import numpy as np
import pytest

from mim_hub.layers import mask_color_noise
from mim_hub.utils.atomic import atomic_file


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    with atomic_file(target) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and not target.exists()
        with open(tmp, "wb") as handle:
            handle.write(b"first")
    assert target.read_bytes() == b"first"
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # the umask's modes, not mkstemp's
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(target) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"sec")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"first" and os.listdir(target.parent) == ["data.bin"]
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_file(tmp_path / "never.bin"):
            pass
    assert not (tmp_path / "never.bin").exists()


def test_the_noise_cache_leaves_nothing_when_its_write_fails(tmp_path, monkeypatch):
    """The cache used a hand-written `path.PID.tmp.npz` + os.replace, which left the temporary
    file behind when the write failed."""

    def fail_half_way(file, **arrays):
        if isinstance(file, (str, os.PathLike)):
            file = open(file, "wb")
        file.write(b"PK\x03\x04 half a zip")
        file.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mask_color_noise.np, "savez_compressed", fail_half_way)
    with pytest.raises(OSError, match="No space left"):
        mask_color_noise.cached_noise_patterns("red", count=2, size=8, cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    first = mask_color_noise.cached_noise_patterns("red", count=2, size=8, cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) == ["red_noise_2x8x8_seed0.npz"]
    assert np.array_equal(mask_color_noise.cached_noise_patterns("red", count=2, size=8, cache_dir=str(tmp_path)), first)
