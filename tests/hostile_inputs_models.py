"""Hostile inputs to configs, image processors, from_pretrained and the evaluation commands (issue
22: silent wrong results, tiny inputs that take gigabytes, tracebacks where a clear error
belongs), shared by tests/models/test_robustness_models.py and benchmarks/robustness.py.

Each case returns (verdict, why): "refused" (a clear error naming the problem), "correct" (an
input that must be accepted gave the right result), or "wrong" (a silent wrong answer, a raw
traceback, or a refusal of a valid input). `run_cases(folder)` runs them all; `summary(results)`
is the line benchmarks/robustness.py prints."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import torch
from PIL import Image

REFUSED, CORRECT, WRONG = "refused", "correct", "wrong"


def _expect_error(action, *phrases, error=ValueError) -> tuple[str, str]:
    """REFUSED when `action` raises `error` with every phrase in its message, WRONG otherwise."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            action()
    except error as caught:
        message = str(caught)
        missing = [p for p in phrases if p.lower() not in message.lower()]
        return (WRONG, f"message lacks {missing}: {message[:140]}") if missing else (REFUSED, message[:140])
    except Exception as caught:  # noqa: BLE001  (anything else is not a clear refusal)
        return WRONG, f"{type(caught).__name__}: {str(caught)[:140]}"
    return WRONG, "accepted"


def _expect_exit_2(argv, *phrases) -> tuple[str, str]:
    from mim_hub.cli import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except BaseException as caught:  # noqa: BLE001
        return WRONG, f"{type(caught).__name__}: {str(caught)[:140]}"
    lines = [line for line in err.getvalue().splitlines() if ": error:" in line]
    if code != 2 or len(lines) != 1 or "Traceback" in err.getvalue():
        return WRONG, f"exit {code}: {err.getvalue()[-140:]}"
    missing = [p for p in phrases if p.lower() not in lines[0].lower()]
    return (WRONG, f"message lacks {missing}: {lines[0][:140]}") if missing else (REFUSED, lines[0][:140])


# ---- 1. float images rescaled twice: every input kind must give the uint8 image's numbers

def _image_kind_cases():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 26, 3), dtype=np.uint8)
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    kinds = {"hwc_float32_unit": rgb.astype(np.float32) / 255, "hwc_float64_unit": rgb / 255.0,
             "hwc_float16_unit": (rgb / 255.0).astype(np.float16), "hwc_float_0_255": rgb.astype(np.float32),
             "hwc_uint16": rgb.astype(np.uint16) * 257, "chw_tensor_uint8": torch.from_numpy(chw),
             "chw_tensor_float_unit": torch.from_numpy(chw).float() / 255, "bchw_tensor_float_unit": torch.from_numpy(chw)[None].float() / 255,
             "list_of_float_tensors": [torch.from_numpy(chw).float() / 255] * 2, "grey_2d_float_unit": rgb[..., 0] / 255.0}

    def case(name, image):
        def run(folder):
            import mim_hub

            processor = mim_hub.MAEImageProcessor.for_image_size(16)
            reference = rgb[..., 0] if name.startswith("grey") else rgb
            expected = processor(Image.fromarray(reference).convert("RGB"), return_tensors="pt").pixel_values
            try:
                got = processor(image, return_tensors="pt").pixel_values
            except Exception as caught:  # noqa: BLE001
                return WRONG, f"{type(caught).__name__}: {str(caught)[:140]}"
            ok = got.shape[1:] == expected.shape[1:] and torch.equal(got, expected.expand_as(got))
            return (CORRECT, "equals the uint8 image") if ok else (WRONG, f"differs by {(got - expected).abs().max():.3f}")
        return run

    cases = [("float images", name, case(name, image)) for name, image in kinds.items()]
    unscaled = {"negative_float": np.full((8, 8, 3), -0.5, np.float32), "normalised_tensor": torch.randn(3, 8, 8),
                "float_above_255": np.full((8, 8, 3), 300.0)}
    for name, image in unscaled.items():
        cases.append(("float images", name, lambda folder, image=image: _expect_error(
            lambda: _processor()(image), "no known scale")))
    for mode, values in (("F", np.linspace(-1, 1, 64, dtype=np.float32)), ("I", np.arange(-32, 32, dtype=np.int32))):
        cases.append(("float images", f"pil_{mode}_negative", lambda folder, mode=mode, values=values: _expect_error(
            lambda: _processor()(Image.fromarray(values.reshape(8, 8), mode=mode)), "negative values")))
    return cases


def _processor(**kwargs):
    import mim_hub

    return mim_hub.MAEImageProcessor(**kwargs)


# ---- 2. config fields of the wrong type or range, for every config

def _config_cases():
    cases = []
    bad = {"bool": "false", "int": "12", "float": "0.5", "choice": "no-such-value", "size": "224", "ints": "2,2",
           "floats": ["x"], "channels": ["x"], "str": 3, "strs": [1]}
    from mim_hub.auto import METHODS, method_classes

    for method in METHODS:
        config_class = method_classes(method)["config"]
        for field, rule in config_class.FIELD_RULES.items():
            value = bad[rule.kind]
            cases.append(("config types", f"{method}.{field}={value!r}", lambda folder, c=config_class, f=field, v=value: _expect_error(
                lambda: c(**{f: v}), f"{f} must be")))
        for field, value in (("layer_norm_eps", -1e-6), ("mask_ratio", 1.5), ("drop_path_rate", -0.1)):
            if field in config_class.FIELD_RULES:
                cases.append(("config types", f"{method}.{field}={value}", lambda folder, c=config_class, f=field, v=value: _expect_error(
                    lambda: c(**{f: v}), f"{f} must be")))
    return cases


# ---- 4. broken features and single-class data in eval / finetune

def _tiny_mae_folder(folder, poison: str | None = None):
    import mim_hub

    path = os.path.join(folder, "model" if poison is None else "poisoned")
    if not os.path.isdir(path):
        torch.manual_seed(0)
        config = mim_hub.MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                   decoder_num_attention_heads=2, decoder_intermediate_size=64)
        model = mim_hub.MAEForPreTraining(config)
        if poison is not None:
            with torch.no_grad():
                dict(model.named_parameters())[poison].view(-1)[0] = float("nan")
        with contextlib.redirect_stderr(io.StringIO()):
            model.save_pretrained(path)
        mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(path)
    return path


def _one_class_folder(folder):
    root = os.path.join(folder, "one_class")
    if not os.path.isdir(root):
        os.makedirs(os.path.join(root, "cats"))
        rng = np.random.RandomState(0)
        for i in range(4):
            Image.fromarray((rng.rand(24, 28, 3) * 255).astype(np.uint8)).save(os.path.join(root, "cats", f"{i}.png"))
    return root


def _feature_cases():
    def nan_weights(folder):
        path = _tiny_mae_folder(folder, poison="mae.encoder.layers.0.attn.qkv_proj.weight")
        return _expect_exit_2(["eval", "--model", path, "--dataset", "digits", "--protocol", "knn"], "NaN or infinite", "qkv_proj")

    def nan_features(folder):
        from mim_hub.training.evaluate import knn_accuracy

        features = torch.randn(8, 4)
        broken = features.clone()
        broken[2, 0] = float("nan")
        return _expect_error(lambda: knn_accuracy(broken, [0, 1] * 4, features, [0, 1] * 4), "NaN or infinite")

    def constant_features(folder):
        from mim_hub.training.evaluate import linear_probe_accuracy

        return _expect_error(lambda: linear_probe_accuracy(torch.ones(8, 4), [0, 1] * 4, torch.randn(8, 4), [0, 1] * 4),
                             "same feature vector")

    def single_class_finetune(folder):
        out = os.path.join(folder, "ft_one_class")
        verdict = _expect_exit_2(["finetune", "--model", _tiny_mae_folder(folder), "--dataset", f"imagefolder:{_one_class_folder(folder)}",
                                  "--output-dir", out, "--epochs", "1"], "1 class", "at least 2")
        if os.path.isdir(out) and os.listdir(out):
            return WRONG, "output written"
        return verdict

    def single_class_eval(folder):
        return _expect_exit_2(["eval", "--model", _tiny_mae_folder(folder), "--dataset", f"imagefolder:{_one_class_folder(folder)}",
                               "--eval-split", "train", "--protocol", "knn"], "1 class")

    return [("broken features", f.__name__, f) for f in (nan_weights, nan_features, constant_features, single_class_finetune,
                                                         single_class_eval)]


# ---- 7 and 12. config.json: absurd sizes for the weights, broken contents

def _config_json_cases():
    changes = {"layers_1e6": {"num_hidden_layers": 1_000_000}, "decoder_layers_1e6": {"decoder_num_hidden_layers": 1_000_000},
               "hidden_2^20": {"hidden_size": 2**20}, "mlp_1e9": {"intermediate_size": 10**9}, "image_128000": {"image_size": 128_000}}
    broken = {"json_array": lambda good: [good], "json_null": lambda good: None, "json_string": lambda good: "mae",
              "layers_-1": lambda good: {**good, "num_hidden_layers": -1}, "unknown_hidden_act": lambda good: {**good, "hidden_act": "swishy"},
              "string_bool": lambda good: {**good, "norm_pix_loss": "false"}, "negative_eps": lambda good: {**good, "layer_norm_eps": -1.0}}

    def with_config(folder, name, content):
        import shutil

        source = _tiny_mae_folder(folder)
        path = os.path.join(folder, f"cfg_{name}")
        if not os.path.isdir(path):
            shutil.copytree(source, path)
        with open(os.path.join(source, "config.json")) as handle:
            good = json.load(handle)
        with open(os.path.join(path, "config.json"), "w") as handle:
            json.dump(content(good), handle)
        return path

    def huge(name, change):
        def run(folder):
            import mim_hub

            path = with_config(folder, name, lambda good: {**good, **change})
            return _expect_error(lambda: mim_hub.MAEForPreTraining.from_pretrained(path), "refusing to build", "config.json")
        return run

    def bad_json(name, content):
        def run(folder):
            import mim_hub

            path = with_config(folder, name, content)
            verdict = _expect_error(lambda: mim_hub.MAEModel.from_pretrained(path), os.path.join(path, "config.json"))
            if verdict[0] != REFUSED:
                return verdict
            return _expect_exit_2(["eval", "--model", path, "--dataset", "digits", "--protocol", "knn"], "config.json")
        return run

    return ([("huge config", name, huge(name, change)) for name, change in changes.items()]
            + [("broken config.json", name, bad_json(name, content)) for name, content in broken.items()])


# ---- 8 and 14. extreme images, empty inputs, a directory as a checkpoint

def _extreme_cases():
    def image(pixels, **kwargs):
        return lambda folder: _expect_error(lambda: _processor(**kwargs)(Image.new("RGB", pixels)),
                                            "aspect ratio" if not kwargs else "MAX_OUTPUT_PIXELS")

    cases = [("extreme images", "png_1x1000000", image((1_000_000, 1))), ("extreme images", "png_300000x2", image((2, 300_000))),
             ("extreme images", "size_100000^2", image((16, 16), size={"height": 100_000, "width": 100_000}, do_center_crop=False)),
             ("extreme images", "shortest_edge_100000", image((16, 16), size={"shortest_edge": 100_000})),
             ("extreme images", "crop_50000^2", image((16, 16), crop_size={"height": 50_000, "width": 50_000}))]

    def png_file(folder):  # through the decoder as in a dataset: a 3 kB PNG
        path = os.path.join(folder, "wide.png")
        Image.new("L", (1_000_000, 1)).save(path)
        return _expect_error(lambda: _processor()(Image.open(path)), "aspect ratio")

    cases.append(("extreme images", "png_file_1x1000000", png_file))
    for name, empty in (("list", []), ("tuple", ()), ("tensor", torch.zeros(0, 3, 8, 8))):
        cases.append(("empty inputs", f"no_images_{name}", lambda folder, e=empty: _expect_error(lambda: _processor()(e), "no images")))

    def directory_checkpoint(folder):
        from mim_hub.conversion import CheckpointError, convert

        path = os.path.join(folder, "a_run_folder")
        os.makedirs(path, exist_ok=True)
        return _expect_error(lambda: convert("mae", path, os.path.join(folder, "out_dir")), "is a directory", error=CheckpointError)

    cases.append(("empty inputs", "directory_as_checkpoint", directory_checkpoint))
    return cases


def all_cases():
    """[(class, case name, run(folder) -> (verdict, why))]."""
    return _image_kind_cases() + _config_cases() + _feature_cases() + _config_json_cases() + _extreme_cases()


def run_cases(folder: str, cases=None) -> list[tuple[str, str, str, str]]:
    """[(class, case, verdict, why)] for every case (or `cases`), sharing `folder`."""
    results = []
    for group, name, run in cases or all_cases():
        verdict, why = run(folder)
        results.append((group, name, verdict, why))
    return results


def summary(results) -> str:
    refused = sum(r[2] == REFUSED for r in results)
    correct = sum(r[2] == CORRECT for r in results)
    wrong = sum(r[2] == WRONG for r in results)
    groups = len({r[0] for r in results})
    return (f"model/config/image inputs ({groups} classes) tried / refused clearly / handled correctly / wrong: "
            f"{len(results)}/{refused}/{correct}/{wrong}")
