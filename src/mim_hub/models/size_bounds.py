"""A bound on what `from_pretrained` may build: the sizes in a config.json must fit the weights
file beside it. A 648-byte config.json asking for `num_hidden_layers: 1000000` otherwise grows
memory until the process is killed, long before loading could say that the weights do not match.

The config's parameter count is estimated from its size fields without building anything (the
dominant terms of every method: transformer blocks, Swin stages, convolutional stages, position
and relative-position tables, token vocabularies, noise pattern banks), and the weights file's from
its safetensors header (read without loading a tensor). A config asking for more than
`MAX_PARAMETER_RATIO` times the parameters of its weights (plus `PARAMETER_SLACK`, for heads and
buffers a file does not hold) is refused. Without a weights file the model is built as asked."""

from __future__ import annotations

import json
import math
import os
import struct

MAX_PARAMETER_RATIO = 8
PARAMETER_SLACK = 2**22
_MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit


def _get(config, name: str, default=0):
    value = getattr(config, name, None)
    return default if value is None or isinstance(value, bool) else value


def _sides(config) -> tuple[int, int]:
    size, patch = _get(config, "image_size", 224), max(1, _get(config, "patch_size", 16))
    height, width = (size[0], size[-1]) if isinstance(size, (list, tuple)) else (size, size)
    return max(1, height // patch), max(1, width // patch)


def estimated_parameters(config, pretraining: bool = True) -> int:
    """About how many parameters (and large buffers) a model of `config` has, from its size
    fields alone: within a small factor of the real count for every method's valid configs.
    `pretraining=False` leaves out what only pre-training models build (decoder, regressor,
    token head, noise bank), whose fields a classifier's config still carries at their defaults."""
    own = getattr(config, "estimated_parameters", None)
    if callable(own):  # a config whose model is not ViT-shaped (SparK's convnets) counts its own
        return int(own(pretraining=pretraining))
    hidden = _get(config, "hidden_size", 768)
    rows, cols = _sides(config)
    tokens = rows * cols
    total = _get(config, "num_channels", 3) * _get(config, "patch_size", 16) ** 2 * hidden  # patch embedding
    depths, embed = _get(config, "depths", None), _get(config, "embed_dim", 0)
    if getattr(config, "backbone", None) == "swin" and depths and embed:
        window = _get(config, "window_size", 7)
        for stage, (depth, heads) in enumerate(zip(depths, _get(config, "num_heads", [1] * len(depths)))):
            width = embed * 2**stage
            total += depth * ((4 + 2 * _get(config, "mlp_ratio", 4)) * width**2 + (2 * window - 1) ** 2 * heads + window**4)
    else:
        inner = _get(config, "intermediate_size", hidden)
        total += _get(config, "num_hidden_layers") * (4 * hidden**2 + 2 * hidden * inner)
    decoder = _get(config, "decoder_hidden_size", hidden) if pretraining else 0
    decoder_inner = _get(config, "decoder_intermediate_size", decoder)
    for layers in ("decoder_num_hidden_layers", "regressor_num_hidden_layers") if pretraining else ():
        width, inner = (hidden, hidden) if not hasattr(config, "decoder_hidden_size") else (decoder, decoder_inner)
        total += _get(config, layers) * (4 * width**2 + 2 * width * inner)
    for depth, width, inner in zip(_get(config, "conv_depths", []), _get(config, "conv_hidden_sizes", []),
                                   _get(config, "conv_intermediate_sizes", [])):
        total += depth * (2 * width * inner + _get(config, "conv_kernel_size", 5) ** 2 * width)
    total += tokens * (hidden + (decoder if hasattr(config, "decoder_hidden_size") else 0))  # position tables
    if getattr(config, "use_relative_position_bias", False) or getattr(config, "use_shared_relative_position_bias", False):
        tables = _get(config, "num_hidden_layers", 1) if getattr(config, "use_relative_position_bias", False) else 1
        total += tables * (2 * rows - 1) * (2 * cols - 1) * _get(config, "num_attention_heads", 1) + (tokens + 1) ** 2
    if pretraining:
        total += _get(config, "vocab_size") * decoder  # CAE's token head
        total += _get(config, "noise_pattern_count") * _get(config, "noise_pattern_size") ** 2  # ColorMAE's pattern bank
    total += _get(config, "num_labels", 2) * hidden
    return int(total)


def _safetensors_parameters(path: str) -> int:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its header)")
        length = struct.unpack("<Q", head)[0]
        if length > min(_MAX_HEADER_BYTES, os.path.getsize(path) - 8):
            raise ValueError(f"{path}: not a readable safetensors file (header of {length} bytes)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a readable safetensors file (its header is not a JSON object)")
    count = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"{path}: not a readable safetensors file (tensor {name!r} has no valid shape)")
        count += math.prod(shape)
    return count


def weights_parameters(folder: str) -> tuple[int, str] | None:
    """(parameters, file) of the safetensors weights in a local model folder, from the headers
    alone; None when the folder has none."""
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return _safetensors_parameters(single), single
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            try:
                shards = sorted(set(json.load(handle).get("weight_map", {}).values()))
            except (json.JSONDecodeError, AttributeError) as error:
                raise ValueError(f"{index}: not a readable weights index ({error})") from None
        present = [os.path.join(folder, s) for s in shards if os.path.isfile(os.path.join(folder, os.path.basename(s)))]
        return sum(_safetensors_parameters(p) for p in present), index
    return None


def check_config_fits_weights(config, folder: str, pretraining: bool = True) -> None:
    """Refuse a config whose estimated size (of a pre-training model, or of the others with
    `pretraining=False`) is absurd for the weights file in `folder`."""
    found = weights_parameters(folder)
    if found is None:
        return
    held, path = found
    wanted = estimated_parameters(config, pretraining)
    if wanted > MAX_PARAMETER_RATIO * held + PARAMETER_SLACK:
        sizes = {f: getattr(config, f) for f in ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                  "decoder_hidden_size", "decoder_num_hidden_layers", "depths", "embed_dim",
                                                  "window_size", "vocab_size", "noise_pattern_count") if hasattr(config, f)}
        raise ValueError(
            f"{os.path.join(folder, 'config.json')}: its sizes ({sizes}) ask for about {wanted:.3g} parameters, but "
            f"{os.path.basename(path)} holds {held:.3g}: refusing to build a model more than {MAX_PARAMETER_RATIO} times "
            "its weights (mim_hub.models.size_bounds.MAX_PARAMETER_RATIO); correct the sizes in config.json")
