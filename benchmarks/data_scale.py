"""Data at scale: memory and start-up of `mim-hub pretrain` against the number of images, for every
source format, and decode + augmentation speed from `prepare-shards` output against the originals.

    python benchmarks/data_scale.py --sizes 2000,20000 --work /tmp/data_scale      # writes its own JPEGs
    python benchmarks/data_scale.py --sizes 2000,20000,200000 --markdown BENCHMARKS.md

Per size N it writes N synthetic JPEGs (32x32, so that writing 200k stays quick) as an imagefolder,
a `save_to_disk` dataset, parquet files and webdataset shards (`prepare-shards`), then runs
`mim-hub pretrain` (a tiny MAE, 3 steps of batch 16, no workers, so the main process holds every
index) on each, and reports its peak RSS (the process and its children, `ru_maxrss`) and its wall
time from launch to exit for one step. Memory must not grow with N: the table shows the ratio
to the smallest N. Parquet without `--streaming` is converted once into datasets' cache (its
first run is reported apart from the cached ones).

Decoding: 200 JPEGs of 500x375 (quality 90) and their `prepare-shards --max-side 320` shards,
decoded and augmented with MAE's pre-training augmentation (RandomResizedCropFlip to 224) on one
core, side by side, in alternation: originals decoded in full (today's path), originals with
draft decoding, shards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def synthetic_jpegs(n: int, size=(32, 32), seed: int = 0, quality: int = 90):
    """n distinct JPEG byte strings (smooth random colour gradients)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    for i in range(n):
        a, b, c = rng.random(3) * 255, rng.random(3) * 4, rng.random(3) * 4
        image = (a + b * xs[..., None] * 32 / w + c * ys[..., None] * 32 / h) % 256
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        yield buffer.getvalue()


def write_formats(n: int, work: str) -> dict:
    """The same n images as every format; returns {format: --dataset spec (+ options)}."""
    import datasets

    base = os.path.join(work, f"n{n}")
    folder, saved, parquet = os.path.join(base, "imagefolder"), os.path.join(base, "saved"), os.path.join(base, "parquet")
    if not os.path.isdir(os.path.join(base, "done")):
        shutil.rmtree(base, ignore_errors=True)
        for c in range(10):
            os.makedirs(os.path.join(folder, f"class{c}"))
        blobs = list(synthetic_jpegs(n))  # encoded once (32x32: ~1 kB each), written as every format
        for i, blob in enumerate(blobs):
            with open(os.path.join(folder, f"class{i % 10}", f"{i:07d}.jpg"), "wb") as handle:
                handle.write(blob)
        import pyarrow as pa

        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"class{c}" for c in range(10)])})
        table = pa.table({"image": pa.array([{"bytes": b, "path": None} for b in blobs], type=features.arrow_schema.field("image").type),
                          "label": pa.array([i % 10 for i in range(n)], type=pa.int64())})
        data = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
        data.save_to_disk(saved)
        del blobs, table
        os.makedirs(parquet)
        per_file = 50_000
        for k, start in enumerate(range(0, n, per_file)):
            data.select(range(start, min(n, start + per_file))).to_parquet(os.path.join(parquet, f"train-{k:05d}.parquet"))
        subprocess.run([sys.executable, "-m", "mim_hub", "prepare-shards", "--dataset", f"imagefolder:{folder}", "--output",
                        os.path.join(base, "wds"), "--max-side", "0", "--num-workers", "2"], check=True, env=ENV, capture_output=True)
        shutil.rmtree(os.path.join(base, "cache"), ignore_errors=True)
        os.makedirs(os.path.join(base, "done"))
    return {"imagefolder": [f"imagefolder:{folder}"], "save_to_disk": [saved], "parquet": [parquet],
            "parquet (streaming)": [parquet, "--streaming"], "webdataset": [f"webdataset:{os.path.join(base, 'wds')}"],
            "webdataset (streaming)": [f"webdataset:{os.path.join(base, 'wds')}", "--streaming"]}


MEASURE = """
import json, os, resource, subprocess, sys, tempfile, time
log, first = sys.argv[3], None
started = time.time()
with tempfile.TemporaryFile() as err:
    proc = subprocess.Popen(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL, stderr=err, env=json.loads(sys.argv[2]))
    while proc.poll() is None:  # the first optimizer step is logged (--log-every 1)
        if first is None and os.path.exists(log) and os.path.getsize(log) > 0:
            first = time.time() - started
        time.sleep(0.05)
    err.seek(0)
    tail = err.read().decode(errors="replace")[-2000:]
if first is None and os.path.exists(log) and os.path.getsize(log) > 0:
    first = time.time() - started
print(json.dumps({"rc": proc.returncode, "wall_s": time.time() - started, "first_step_s": first, "err": tail,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_pretrain(model: str, dataset: list[str], output: str, steps: int, env: dict) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    cmd = [sys.executable, "-m", "mim_hub", "pretrain", "--model", model, "--dataset", *dataset, "--output-dir", output,
           "--max-steps", str(steps), "--batch-size", "16", "--save-every", "0", "--num-workers", "0", "--log-every", "1",
           "--shuffle-buffer", "1000"]
    out = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cmd), json.dumps(env), os.path.join(output, "log.jsonl")],
                         capture_output=True, text=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{dataset}: {result['err']}")
    with open(os.path.join(output, "log.jsonl")) as handle:  # the data layer's own share, as pretrain logs it
        first = json.loads(handle.readline())
    result["data_index_s"], result["data_first_batch_s"] = first.get("data_index_s"), first.get("data_first_batch_s")
    return result


def tiny_model(work: str) -> str:
    import torch

    from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor

    folder = os.path.join(work, "tiny-mae")
    if not os.path.isdir(folder):
        torch.manual_seed(0)
        MAEForPreTraining(MAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                    decoder_num_attention_heads=2, decoder_intermediate_size=64)).save_pretrained(folder)
        MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    return folder


def memory_and_startup(sizes, work: str) -> list[dict]:
    model = tiny_model(work)
    rows = []
    for n in sizes:
        started = time.time()
        formats = write_formats(n, work)
        print(f"n={n}: data written in {time.time() - started:.0f} s", flush=True)
        env = {**ENV, "HF_DATASETS_CACHE": os.path.join(work, f"n{n}", "hf-cache")}
        shutil.rmtree(env["HF_DATASETS_CACHE"], ignore_errors=True)
        for name, dataset in formats.items():
            first = None
            if name == "parquet":  # the one-off conversion into datasets' cache, then a cached run
                first = run_pretrain(model, dataset, os.path.join(work, "run"), 3, env)
            three = run_pretrain(model, dataset, os.path.join(work, "run"), 3, env)
            row = {"format": name, "n": n, "peak_rss_mib": three["peak_rss_mib"], "first_step_s": three["first_step_s"],
                   "wall_s": three["wall_s"], "first_run_first_step_s": first["first_step_s"] if first else None,
                   "data_index_s": three["data_index_s"], "data_first_batch_s": three["data_first_batch_s"],
                   "first_run_data_s": (first["data_index_s"] + first["data_first_batch_s"]) if first else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def transforms_at(commit: str):
    """`mim_hub.training.transforms` as it was at `commit` (git), to time today's path against it."""
    import importlib.util

    source = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:src/mim_hub/training/transforms.py"], capture_output=True,
                            text=True, check=True).stdout.replace("from ..models", "from mim_hub.models")
    path = os.path.join(ROOT, "benchmarks", f".transforms_{commit[:12]}.py")
    with open(path, "w") as handle:
        handle.write(source)
    try:
        spec = importlib.util.spec_from_file_location(f"transforms_{commit[:12]}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.remove(path)
    return module


def decode_speed(work: str, count: int = 200, repeats: int = 5, against: str | None = None) -> dict:
    import torch

    from mim_hub.data import load_images
    from mim_hub.training.transforms import RandomResizedCropFlip

    torch.set_num_threads(1)
    folder = os.path.join(work, "decode", "originals", "a")
    if not os.path.isdir(folder):
        os.makedirs(folder)
        for i, blob in enumerate(synthetic_jpegs(count, size=(500, 375), seed=1)):
            with open(os.path.join(folder, f"{i:04d}.jpg"), "wb") as handle:
                handle.write(blob)
        subprocess.run([sys.executable, "-m", "mim_hub", "prepare-shards", "--dataset", f"imagefolder:{os.path.dirname(folder)}",
                        "--output", os.path.join(work, "decode", "shards"), "--max-side", "320", "--num-workers", "1"],
                       check=True, env=ENV, capture_output=True)
    originals = load_images(f"imagefolder:{os.path.dirname(folder)}")
    shards = load_images(f"webdataset:{os.path.join(work, 'decode', 'shards')}")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    exact, drafting = RandomResizedCropFlip(224, mean, std, draft=False), RandomResizedCropFlip(224, mean, std)

    def today(images):  # decode in full to RGB, then augment (the path BENCHMARKS.md measured)
        rng = np.random.default_rng(0)
        for i in range(len(images)):
            exact(images.image(i), rng)

    def lazy(images, transform):
        rng = np.random.default_rng(0)
        for i in range(len(images)):
            images.with_image(i, lambda image: transform(image, rng))

    crops = RandomResizedCropFlip(224, mean, std, uint8=True)  # what a worker does when the GPU normalises (pretrain on a GPU)
    contenders = {"originals 500x375, decoded in full (today)": lambda: today(originals),
                  "originals 500x375, draft decoding": lambda: lazy(originals, drafting),
                  "prepare-shards --max-side 320": lambda: lazy(shards, drafting),
                  "originals 500x375, uint8 crops (normalised on the GPU)": lambda: lazy(originals, crops),
                  "prepare-shards --max-side 320, uint8 crops (normalised on the GPU)": lambda: lazy(shards, crops)}
    if against:  # the same paths with the augmentation code of another commit, side by side
        previous = transforms_at(against)
        old_exact, old_drafting = previous.RandomResizedCropFlip(224, mean, std, draft=False), previous.RandomResizedCropFlip(224, mean, std)

        def old_today(images):
            rng = np.random.default_rng(0)
            for i in range(len(images)):
                old_exact(images.image(i), rng)

        contenders[f"originals 500x375, decoded in full, transforms of {against[:10]}"] = lambda: old_today(originals)
        contenders[f"prepare-shards --max-side 320, transforms of {against[:10]}"] = lambda: lazy(shards, old_drafting)
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    result = {name: count / float(np.median(t)) for name, t in times.items()}
    base = result["originals 500x375, decoded in full (today)"]
    out = {name: {"images_per_s": v, "ratio_to_today": v / base} for name, v in result.items()}
    if against:
        previous = result[f"originals 500x375, decoded in full, transforms of {against[:10]}"]
        for name, v in result.items():
            out[name]["ratio_to_previous"] = v / previous
    return out


def markdown(rows, decode) -> str:
    lines = ["## Data at scale (`benchmarks/data_scale.py`)", ""]
    if rows:
        sizes = sorted({r["n"] for r in rows})
        lines += ["`mim-hub pretrain`, tiny MAE, 3 steps of batch 16, no workers (the main process holds every index); "
                  "synthetic 32x32 JPEGs. Peak RSS and its ratio to the smallest N; seconds from launch to the first "
                  "optimizer step (logged), including Python, torch and model start-up.", "",
                  "| format | " + " | ".join(f"N={n:,} peak RSS MiB (x)" for n in sizes) + " | " +
                  " | ".join(f"N={n:,} s to step 1" for n in sizes) + " | " +
                  " | ".join(f"N={n:,} data layer s (index + first batch)" for n in sizes) + " |",
                  "|---|" + "---|" * (3 * len(sizes))]
        for name in dict.fromkeys(r["format"] for r in rows):
            mine = {r["n"]: r for r in rows if r["format"] == name}
            first = mine[sizes[0]]["peak_rss_mib"]
            rss = [f"{mine[n]['peak_rss_mib']:.0f} ({mine[n]['peak_rss_mib'] / first:.3f})" if n in mine else "n/m" for n in sizes]
            wall = []
            for n in sizes:
                if n not in mine:
                    wall.append("n/m")
                    continue
                extra = f" (first run, converting into the cache: {mine[n]['first_run_first_step_s']:.1f})" if mine[n]["first_run_first_step_s"] else ""
                wall.append(f"{mine[n]['first_step_s']:.1f}{extra}")
            own = []
            for n in sizes:
                r = mine.get(n)
                if r is None or r.get("data_index_s") is None:
                    own.append("n/m")
                    continue
                extra = f" (first run: {r['first_run_data_s']:.2f})" if r.get("first_run_data_s") else ""
                own.append(f"{r['data_index_s'] + r['data_first_batch_s']:.2f} ({r['data_index_s']:.2f} + {r['data_first_batch_s']:.2f}){extra}")
            lines.append(f"| {name} | " + " | ".join(rss) + " | " + " | ".join(wall) + " | " + " | ".join(own) + " |")
        lines.append("")
    if decode:
        lines += ["Decode + MAE pre-training augmentation (RandomResizedCropFlip to 224, torch resize), one core, 200 synthetic "
                  "JPEGs of 500x375, median of 5 alternating rounds:", "", "| source | images/s | vs today |", "|---|---|---|"]
        if all("ratio_to_previous" in r for r in decode.values()):
            previous = next(n for n in decode if "transforms of" in n).split("transforms of ")[1]
            lines[-2:] = [f"| source | images/s | vs today | vs the originals with the transforms of {previous} |", "|---|---|---|---|"]
            lines += [f"| {name} | {r['images_per_s']:.0f} | {r['ratio_to_today']:.2f} | {r['ratio_to_previous']:.2f} |"
                      for name, r in decode.items()]
        else:
            lines += [f"| {name} | {r['images_per_s']:.0f} | {r['ratio_to_today']:.2f} |" for name, r in decode.items()]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000", help="comma-separated numbers of images")
    parser.add_argument("--work", default="/tmp/mim_hub_data_scale", help="scratch folder (reused between runs)")
    parser.add_argument("--skip", default="", help="memory or decode (its results are kept from --output's last run)")
    parser.add_argument("--against-commit", default=None,
                        help="decode: also time the augmentation code of this git commit, side by side (e.g. before a change)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "data_scale.json"), help="results as JSON")
    parser.add_argument("--markdown", default=None, help="also write the table into this file's data-at-scale section")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    before = {}
    if os.path.exists(args.output):  # a skipped part keeps its last results
        with open(args.output) as handle:
            before = json.load(handle)
    rows = before.get("memory_and_startup", []) if "memory" in args.skip else memory_and_startup([int(s) for s in args.sizes.split(",")], args.work)
    decode = before.get("decode", {}) if "decode" in args.skip else decode_speed(args.work, against=args.against_commit)
    with open(args.output, "w") as handle:
        json.dump({"memory_and_startup": rows, "decode": decode}, handle, indent=1)
    table = markdown(rows, decode)
    print(table)
    if args.markdown:
        text = open(args.markdown).read() if os.path.exists(args.markdown) else ""
        start = text.find("## Data at scale")
        if start >= 0:
            end = text.find("\n## ", start + 1)
            text = text[:start] + table + (text[end:] if end >= 0 else "")
        else:
            text = text.rstrip() + "\n\n" + table
        with open(args.markdown, "w") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
