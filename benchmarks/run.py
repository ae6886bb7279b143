"""mim_hub benchmarks: one entry point, a table on stdout, JSON on disk, BENCHMARKS.md.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--methods mae,simmim,...] [--output benchmarks/results.json]

On a GPU the whole session is benchmarks/gpu/run.sh (docs/gpu.md), which writes BENCHMARKS_cuda.md
and results_cuda.json; this script's own CUDA tables go to benchmarks/gpu/out/ unless named.

Measures, each with warm-up, the median of repetitions and A/B interleaving (the order reversed
every other round; a ratio is the median of the per-round ratios, with its quartiles):
- the machine's matmul ceiling (fp32, and bf16 where supported) on the models' layer shapes;
- per method at base size (224 px, batch 8 on CPU): encoder inference, pre-training forward and
  forward+backward (fp32, and bf16 autocast where the hardware has bf16), classifier forward,
  against transformers' implementation with identical weights where one exists; images/s,
  achieved FLOP/s and its fraction of the ceiling;
- the data path: our image processor against transformers' ViTImageProcessorPil (images/s per worker);
- from_pretrained and conversion of a base-size original checkpoint (time, peak memory);
- backbones: a ViT-B/16 MAEBackbone at 224 px giving 4 feature maps through BEiT's pyramid
  (add_fpn) against transformers' BeitBackbone(add_fpn=True) on the same shapes (a ratio).
`--quick` uses a small model and few repetitions (for a smoke run).
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from pairs import BF16_STEP, NOISE_FLOOR, NOISE_FLOOR_TWIN, PAIRS, bf16_autocast_supported  # noqa: E402
from memory import cpu_call_peak_bytes  # noqa: E402
from timing import interleaved, interleaved_samples, paired_ratio, synchronize  # noqa: E402


def matmul_ceiling(device: str, dtype: torch.dtype, repeats: int, batch: int = 8) -> float:
    """Best FLOP/s of [B*N, D] x [D, 4D] matmuls shaped like a ViT-B MLP at the benchmark's batch
    and, on a GPU, of a large square product (a small product does not fill the chip): the fastest
    of 3 x `repeats` timings, so a slow moment of a shared machine does not lower the ceiling."""
    shapes = [(batch * 197, 768, 3072)] + ([(8192, 8192, 8192)] if device == "cuda" else [])
    best = 0.0
    for rows, inner, cols in shapes:
        a = torch.randn(rows, inner, device=device, dtype=dtype)
        b = torch.randn(inner, cols, device=device, dtype=dtype)

        for _ in range(2):  # warm-up
            a @ b
        synchronize()
        fastest = float("inf")
        for _ in range(3 * repeats):  # a ceiling is the best the machine does, not its median
            start = time.perf_counter()
            for _ in range(5):
                a @ b
            synchronize()
            fastest = min(fastest, (time.perf_counter() - start) / 5)
        best = max(best, 2 * rows * inner * cols / fastest)
    return best


def data_path(repeats: int) -> dict:
    from PIL import Image
    from transformers import ViTImageProcessorPil
    from transformers.image_utils import PILImageResampling

    from mim_hub import MAEImageProcessor
    from mim_hub.models.image_processing_common import MIMImageProcessor

    rng = np.random.RandomState(0)
    jpegs = []
    for _ in range(32):
        h, w = rng.randint(300, 500), rng.randint(300, 500)
        buffer = io.BytesIO()
        Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    decoded = [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs]

    class SameTransform(MIMImageProcessor):  # ViTImageProcessorPil's transform with our path
        resample = PILImageResampling.BILINEAR
        image_mean, image_std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
        size = {"height": 224, "width": 224}
        do_resize = do_rescale = do_normalize = True

    from mim_hub.training.transforms import RandomResizedCropFlip

    augment = RandomResizedCropFlip(224, [0.5] * 3, [0.5] * 3)
    augment_rng = np.random.default_rng(0)
    contenders = {
        "transformers ViTImageProcessorPil": ViTImageProcessorPil(size={"height": 224, "width": 224}),
        "ours, same transform, PIL resize (bit-identical)": SameTransform(),
        "ours, same transform, torch resize": SameTransform(resize_backend="torch"),
        "ours, MAE eval transform, PIL resize": MAEImageProcessor(),
        "ours, MAE eval transform, torch resize": MAEImageProcessor(resize_backend="torch"),
    }

    def over(images, processor):
        return lambda: [processor(image, return_tensors="np") for image in images]

    def augmenting(images):
        return lambda: [augment(image, augment_rng) for image in images]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per data-loader worker: one core each
    try:
        runs = {name: over(decoded, p) for name, p in contenders.items()}
        runs["ours, pre-training augmentation (RandomResizedCropFlip, torch)"] = augmenting(decoded)
        processing = interleaved(runs, repeats=repeats)
        decode = interleaved({"decode": lambda: [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs]}, repeats=repeats)["decode"]
    finally:
        torch.set_num_threads(threads)
    reference = processing["transformers ViTImageProcessorPil"]
    return {name: {"images_per_s": len(decoded) / t, "with_decode_images_per_s": len(decoded) / (t + decode), "speedup_vs_transformers": reference / t}
            for name, t in processing.items()}


def loading(device: str, repeats: int) -> dict:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    from memory import cpu_peak_bytes
    from mim_hub import MAEConfig, MAEForPreTraining
    from mim_hub.conversion import convert

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        ours_dir, theirs_dir = os.path.join(folder, "ours"), os.path.join(folder, "theirs")
        model = MAEForPreTraining(MAEConfig())
        model.save_pretrained(ours_dir)
        ViTMAEForPreTraining(ViTMAEConfig(layer_norm_eps=1e-6)).save_pretrained(theirs_dir)
        # an original-format ViT-B checkpoint with decoder, as mae_visualize_vit_base.pth
        from mae_vs_transformers import to_transformers_state  # noqa: F401  (same key family)

        original = os.path.join(folder, "mae_visualize_vit_base.pth")
        torch.save({"model": _to_original_mae(model.state_dict())}, original)
        size = os.path.getsize(original)
        del model

        def load_ours():
            MAEForPreTraining.from_pretrained(ours_dir)

        def load_theirs():
            ViTMAEForPreTraining.from_pretrained(theirs_dir)

        timing = interleaved({"ours": load_ours, "transformers": load_theirs}, warmup=1, repeats=max(3, repeats // 2))
        setup = "import mim_hub, transformers"
        results["from_pretrained ViT-B MAE (s)"] = timing
        results["from_pretrained peak RSS increase (MiB)"] = {
            "ours": cpu_peak_bytes(f"model = mim_hub.MAEForPreTraining.from_pretrained({ours_dir!r})", setup) / 2**20,
            "transformers": cpu_peak_bytes(f"model = transformers.ViTMAEForPreTraining.from_pretrained({theirs_dir!r})", setup) / 2**20,
        }
        counter = [0]

        def run_convert():
            counter[0] += 1
            convert("mae", original, os.path.join(folder, f"converted{counter[0]}"))

        results["convert mae_visualize_vit_base.pth (s)"] = interleaved({"ours": run_convert}, warmup=1, repeats=3)
        peak = cpu_peak_bytes(
            f"from mim_hub.conversion import convert; convert('mae', {original!r}, {os.path.join(folder, 'peak')!r})", setup
        )
        results["convert peak RSS increase / file size"] = {"ours": peak / size, "file MiB": size / 2**20}
    return results


def backbone(device: str, repeats: int, batch: int) -> dict:
    """ViT-B/16 forward at 224 px, 4 feature maps (blocks 4/6/8/12 through the x4/x2/x1/x0.5
    pyramid): our MAEBackbone against transformers' BeitBackbone with add_fpn (no position
    table, no relative bias: the same block shapes), inference, fp32."""
    from transformers import BeitBackbone, BeitConfig

    from mim_hub import MAEBackbone, MAEConfig

    torch.manual_seed(0)
    ours = MAEBackbone(MAEConfig(out_features=["stage4", "stage6", "stage8", "stage12"], add_fpn=True)).to(device).eval()
    theirs = BeitBackbone(BeitConfig(out_features=["stage4", "stage6", "stage8", "stage12"], add_fpn=True, layer_norm_eps=1e-6)).to(device).eval()
    pixels = torch.randn(batch, 3, 224, 224, device=device)
    with torch.no_grad():
        shapes_ours = [tuple(m.shape) for m in ours(pixels).feature_maps]
        shapes_theirs = [tuple(m.shape) for m in theirs(pixels).feature_maps]
    if shapes_ours != shapes_theirs:
        raise RuntimeError(f"feature maps differ: ours {shapes_ours}, transformers {shapes_theirs}")

    def run(model):
        def call():
            with torch.no_grad():
                model(pixels)
        return call

    samples = interleaved_samples({"ours": run(ours), "transformers": run(theirs)}, warmup=1, repeats=repeats)
    ratio = paired_ratio(samples["transformers"], samples["ours"])
    return {"ViT-B/16 backbone forward, 224 px, 4 maps (add_fpn)": {
        "ours_s": statistics.median(samples["ours"]), "transformers_s": statistics.median(samples["transformers"]),
        "speedup_vs_transformers": ratio["median"], "q1": ratio["q1"], "q3": ratio["q3"], "batch": batch,
        "feature_maps": [list(s[1:]) for s in shapes_ours]}}


def _to_original_mae(state: dict) -> dict:
    """Our MAE state dict under the original facebookresearch/mae names (inverse of the converter)."""
    out = {}
    for key, value in state.items():
        k = key.replace("mae.embeddings.patch_embed.projection.", "patch_embed.proj.").replace("mae.embeddings.", "")
        k = k.replace("mae.encoder.layers.", "blocks.").replace("decoder.transformer.layers.", "decoder_blocks.")
        k = k.replace("mae.layernorm.", "norm.").replace("attn.qkv_proj.", "attn.qkv.").replace("attn.o_proj.", "attn.proj.")
        k = k.replace("decoder.mask_token", "mask_token").replace("decoder.decoder_pos_embed", "decoder_pos_embed")
        k = k.replace("decoder.decoder_", "decoder_")
        out[k] = value
    return out


def measure_method(method: str, batch: int, device: str, quick: bool, repeats: int, ceiling: dict, measures: str | None = None,
                   compile_backend: str = "inductor") -> dict:
    """Every measure of one method's pairs (or those whose name contains one of the comma-separated
    `measures`): median ms, images/s, fraction of the fp32 ceiling."""
    builder = PAIRS[method]
    options = {"size": "tiny"} if quick else {}
    if "compile_backend" in inspect.signature(builder).parameters:
        options["compile_backend"] = compile_backend
    pairs = builder(batch, device, **options)
    wanted = [w.strip() for w in measures.split(",")] if measures else None
    rows = {}
    for measure, contenders in pairs.items():
        if wanted and not any(w in measure for w in wanted):
            continue
        if callable(contenders):  # a row built only when measured (the compiled step)
            contenders = contenders()
        flops = contenders.pop("flops", None)
        notes = {k: contenders.pop(k) for k in ("compile_s", "compiled_blocks", "backend") if k in contenders}
        samples = interleaved_samples(contenders, repeats=repeats)
        times = {name: statistics.median(values) for name, values in samples.items()}
        row = {}
        for name, seconds in times.items():
            row[name] = {"ms": seconds * 1e3, "images_per_s": batch / seconds}
            if flops:
                row[name]["flops_fraction_of_ceiling"] = flops / seconds / ceiling["bf16" if measure.endswith(BF16_STEP) else "fp32"]
        if len(times) > 1:  # per round (the two calls ran seconds apart), then the median over rounds
            paired = {n: paired_ratio(samples[n], samples["ours"]) for n in samples if n != "ours"}
            row["ratio"] = {n: p["median"] for n, p in paired.items()}
            row["ratio_quartiles"] = {n: [p["q1"], p["q3"]] for n, p in paired.items()}
        for name, fn in contenders.items():  # peak memory of one call of each contender
            if device == "cuda":  # everything allocated on the GPU, weights included
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                fn()
                torch.cuda.synchronize()
                row[name]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            else:  # the call's working memory: CPU tensor memory above what it starts with
                row[name]["peak_gib"] = cpu_call_peak_bytes(fn) / 2**30
        row.update(notes)
        rows[measure] = row
        line = "  ".join(f"{n}: {v['ms']:.1f} ms" for n, v in row.items() if isinstance(v, dict) and not n.startswith("ratio"))
        ratio = "  ratio " + ", ".join(f"{r:.2f}" for r in row.get("ratio", {}).values()) if "ratio" in row else ""
        fraction = f"  ({row['ours'].get('flops_fraction_of_ceiling', 0):.2f} of ceiling)" if flops else ""
        compiled = f"  (compile {notes['compile_s']:.1f} s, {notes['backend']})" if "compile_s" in notes else ""
        print(f"{method:10s} {measure:28s} {line}{ratio}{fraction}{compiled}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models, few repetitions (smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--methods", default=",".join(PAIRS), help="comma-separated methods to benchmark")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8 on CPU, 64 on CUDA)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--measures", default=None, help="run only the measures whose name contains one of these (comma-separated), "
                        "e.g. 'compiled'; the others' earlier results in --output are kept")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled step")
    parser.add_argument("--output", default=None, help="JSON results (default: benchmarks/results.json; on a GPU "
                        "benchmarks/gpu/out/run_py_results.json: results_cuda.json is benchmarks/gpu/run.sh's)")
    parser.add_argument("--markdown", default=None, help="the table (default: BENCHMARKS.md; on a GPU benchmarks/gpu/out/run_py_BENCHMARKS.md: "
                        "BENCHMARKS_cuda.md is benchmarks/gpu/run.sh's)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip (their earlier results in --output are kept): models,data,loading,backbone;"
                        " likewise the earlier results of methods left out of --methods are kept")
    args = parser.parse_args()
    if args.device == "cuda":  # the GPU session's files (BENCHMARKS_cuda.md, results_cuda.json) are gpu/run.sh's: not overwritten
        gpu_out = os.path.join(os.path.dirname(__file__), "gpu", "out")
        os.makedirs(gpu_out, exist_ok=True)
        args.output = args.output or os.path.join(gpu_out, "run_py_results.json")
        args.markdown = args.markdown or os.path.join(gpu_out, "run_py_BENCHMARKS.md")
    args.output = args.output or os.path.join(os.path.dirname(__file__), "results.json")
    args.markdown = args.markdown or os.path.join(os.path.dirname(__file__), "..", "BENCHMARKS.md")
    repeats = args.repeats or (3 if args.quick else 7)
    batch = args.batch or (2 if args.quick else 8 if args.device == "cpu" else 64)
    skip = set(filter(None, args.skip.split(",")))
    previous = {}
    partial = bool(skip) or bool(args.measures) or set(args.methods.split(",")) != set(PAIRS)
    if partial and os.path.isfile(args.output):  # keep the sections (and methods) this run skips
        with open(args.output) as handle:
            previous = json.load(handle)
    report = {
        **{k: v for k, v in previous.items() if k in ("models", "data_path", "loading", "backbone")},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device,
                    "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
        "batch": batch, "repeats": repeats,
    }
    ceiling = {"fp32": matmul_ceiling(args.device, torch.float32, repeats, batch)}
    if bf16_autocast_supported(args.device):
        ceiling["bf16"] = matmul_ceiling(args.device, torch.bfloat16, repeats, batch)
    report["matmul_ceiling_flops"] = ceiling
    print(f"matmul ceiling: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in ceiling.items()))
    if "models" not in skip:
        report["models"] = dict(previous.get("models", {}))
        for method in args.methods.split(","):
            try:  # one method that fails must not lose the others' results
                rows = measure_method(method, batch, args.device, args.quick, repeats, ceiling, args.measures, args.compile_backend)
                report["models"][method] = {**report["models"].get(method, {}), **rows} if args.measures else rows
            except Exception as error:
                print(f"{method:10s} FAILED: {type(error).__name__}: {error}")
                report["models"][method] = {"error": f"{type(error).__name__}: {error}"}
    if "data" not in skip:
        report["data_path"] = data_path(repeats)
        for name, row in report["data_path"].items():
            print(f"data path  {name:60s} {row['images_per_s']:.0f} img/s ({row['with_decode_images_per_s']:.0f} with JPEG decode), {row['speedup_vs_transformers']:.2f}x")
    if "loading" not in skip and not args.quick:
        report["loading"] = loading(args.device, repeats)
        for name, row in report["loading"].items():
            print(f"loading    {name:40s} " + "  ".join(f"{k}: {v:.2f}" for k, v in row.items()))
    if "backbone" not in skip:
        report["backbone"] = backbone(args.device, repeats, batch)
        for name, row in report["backbone"].items():
            print(f"backbone   {name:60s} ours {row['ours_s']:.3f} s, transformers {row['transformers_s']:.3f} s, "
                  f"{row['speedup_vs_transformers']:.2f}x (quartiles {row['q1']:.2f}-{row['q3']:.2f})")
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    write_markdown(report, args.markdown)
    return 0


def _gib_text(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.0f} MiB"


def write_markdown(report: dict, path: str) -> None:
    m = report["machine"]
    lines = ["# Benchmarks", "", "Generated by `python benchmarks/run.py` (do not edit by hand).", "",
             f"Machine: {m['processor']}, {m['threads']} threads, {m['platform']}, torch {m['torch']}, device {m['device']}"
             + (f" ({m['gpu']})" if m.get("gpu") else "") + f". Batch {report['batch']}, median of {report['repeats']} interleaved repetitions.", "",
             "Matmul ceiling: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in report["matmul_ceiling_flops"].items()), ""]
    if "models" in report:
        if report["machine"]["device"] == "cuda":
            lines += ["Peak memory: the most GPU memory allocated during one call, weights included.", ""]
        else:
            lines += ["Peak memory: the most CPU tensor memory held during one call (after warm-up) above what was held when it "
                      "began, from torch's profiler: the call's working memory, weights and inputs excluded; a training step "
                      "frees the last step's gradients first.", ""]
        lines += [("Ratios: other / ours for the two calls of each round (run seconds apart, in alternating order), the median over "
                   "rounds with the quartiles in brackets; > 1 means ours is faster. The fraction of the ceiling is ours against the "
                   "matmul ceiling of the measure's precision (bf16 for the autocast rows)."), "",
                  "| method | measure | ours ms (peak memory) | other | other ms (peak) | other / ours | ours fraction of ceiling |",
                  "|---|---|---|---|---|---|---|"]
        for method, measures in report["models"].items():
            if "error" in measures:
                lines.append(f"| {method} | failed: {measures['error'][:120]} | | | | | |")
                continue
            for measure, row in measures.items():
                others = [n for n in row if isinstance(row[n], dict) and n != "ours" and not n.startswith("ratio")]
                if "compile_s" in row:  # the compiled step: its compile time in the measure's cell
                    measure = f"{measure}, {row['backend']}, {row['compiled_blocks']} blocks, compiled in {row['compile_s']:.1f} s"
                frac = row["ours"].get("flops_fraction_of_ceiling")
                frac = f"{frac:.2f}" if frac else ""
                peak = (lambda name: f" ({_gib_text(row[name]['peak_gib'])})" if "peak_gib" in row[name] else "")
                if not others:
                    lines.append(f"| {method} | {measure} | {row['ours']['ms']:.1f}{peak('ours')} | | | | {frac} |")
                for other in others:
                    quartiles = row.get("ratio_quartiles", {}).get(other)
                    spread = f" ({quartiles[0]:.2f}-{quartiles[1]:.2f})" if quartiles else ""
                    lines.append(f"| {method} | {measure} | {row['ours']['ms']:.1f}{peak('ours')} | {other} | {row[other]['ms']:.1f}{peak(other)} | "
                                 f"{row['ratio'][other]:.2f}{spread} | {frac} |")
        lines.append("")
        floor = report["models"].get("mae", {}).get(NOISE_FLOOR)
        if floor and "ratio" in floor:
            low, high = floor["ratio_quartiles"][NOISE_FLOOR_TWIN]
            lines += [f"Noise floor of this run: the MAE step against an identical copy of itself (a ratio of 1 by construction) "
                      f"measured {floor['ratio'][NOISE_FLOOR_TWIN]:.2f} ({low:.2f}-{high:.2f}); a ratio inside that band does not "
                      "tell the two contenders apart.", ""]
    if "data_path" in report:
        lines += ["Data path, one worker (one core), 32 JPEGs of 300-500 px to 224 px:", "",
                  "| image processor | images/s (decoded) | images/s incl. JPEG decode | speed-up vs ViTImageProcessorPil |", "|---|---|---|---|"]
        lines += [f"| {n} | {r['images_per_s']:.0f} | {r['with_decode_images_per_s']:.0f} | {r.get('speedup_vs_transformers', float('nan')):.2f} |"
                  for n, r in report["data_path"].items()]
        lines.append("")
        step = report.get("models", {}).get("mae", {}).get("pre-training step (fwd+bwd)", {}).get("ours")
        augment = next((r for n, r in report["data_path"].items() if "augmentation" in n), None)
        if step and augment:
            workers = step["images_per_s"] / augment["with_decode_images_per_s"]
            lines += [f"MAE pre-training step here: {step['images_per_s']:.1f} images/s; decode + augmentation: "
                      f"{augment['with_decode_images_per_s']:.0f} images/s per worker, so {workers:.2f} of a worker keeps it fed. "
                      "A GPU step of N images/s needs N / that many workers (e.g. 8 workers give "
                      f"{8 * augment['with_decode_images_per_s']:.0f} images/s).", ""]
    if "loading" in report:
        lines += ["| loading | values |", "|---|---|"]
        lines += [f"| {n} | " + ", ".join(f"{k}: {v:.2f}" for k, v in r.items()) + " |" for n, r in report["loading"].items()]
        lines.append("")
    if "backbone" in report:
        lines += ["Backbones (inference, fp32; transformers / ours of the same round, median and quartiles; > 1: ours faster):", "",
                  "| backbone | feature maps | ours s | transformers' BeitBackbone s | transformers / ours |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {' '.join('x'.join(map(str, s)) for s in r['feature_maps'])} | {r['ours_s']:.3f} | {r['transformers_s']:.3f} | "
                  f"{r['speedup_vs_transformers']:.2f} ({r['q1']:.2f}-{r['q3']:.2f}) |" for n, r in report["backbone"].items()]
        lines.append("")
    # sections other scripts write into the file (`## ...`: benchmarks/data_scale.py's) are kept as they are
    kept = ""
    if os.path.isfile(path):
        with open(path) as handle:
            text = handle.read()
        start = text.find("\n## ")
        kept = text[start:] if start >= 0 else ""
    with open(path, "w") as handle:
        handle.write("\n".join(lines).rstrip("\n") + "\n" + kept)


if __name__ == "__main__":
    raise SystemExit(main())
