"""GPU session, step 3: is MAE ViT-B pre-training data-bound when it reads `prepare-shards` output?

Writes synthetic 500x375 JPEGs (smooth gradients plus noise, quality 90) as an imagefolder, turns
them into webdataset shards with `mim-hub prepare-shards --max-side 320`, then runs `mim-hub
pretrain` on the shards: MAE ViT-B/16 at 224 px, bf16 autocast, the documented default workers
(the CPUs less one, at most 8), uint8 crops normalised on the GPU. From its log: images/s and the
share of the wall time spent waiting for the next batch (`data_wait_fraction`), cumulative and
in the steady state (from the first logged step on, so worker start-up is apart). If the wait is
above 5% it runs again with every CPU but one as workers. Results to OUT/data.json.

    python benchmarks/gpu/data.py --out DIR [--dry-run]

--dry-run: 48 small JPEGs, a tiny MAE on the CPU, a few steps.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_jpeg(job) -> None:
    """One synthetic photo-like JPEG (a colour gradient with noise, so it compresses like a photo)."""
    path, index, (width, height) = job
    from PIL import Image

    rng = np.random.default_rng(index)
    ys, xs = np.mgrid[0:height, 0:width]
    base = rng.random(3) * 255 + rng.random(3) * 2 * xs[..., None] / width * 100 + rng.random(3) * ys[..., None] / height * 100
    image = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def write_imagefolder(folder: str, count: int, size: tuple[int, int]) -> None:
    jobs = []
    for index in range(count):
        label = f"class{index % 4}"
        os.makedirs(os.path.join(folder, "train", label), exist_ok=True)
        jobs.append((os.path.join(folder, "train", label, f"{index:06d}.jpg"), index, size))
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(write_jpeg, jobs, chunksize=16)


def cli(argv: list[str], env: dict, log_path: str) -> float:
    """Run `python -m mim_hub ARGV`, its output to log_path; returns the seconds it took."""
    started = time.time()
    with open(log_path, "a") as log:
        log.write(f"$ mim-hub {' '.join(argv)}\n")
        log.flush()
        code = subprocess.run([sys.executable, "-m", "mim_hub", *argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        with open(log_path) as log:
            tail = log.read()[-3000:]
        raise SystemExit(f"mim-hub {argv[0]} failed (exit {code}):\n{tail}")
    return time.time() - started


def steady_state(records: list[dict]) -> dict:
    """Data wait and images/s between the first logged record and the last (start-up excluded)."""
    first, last = records[0], records[-1]
    waited = last["data_wait_fraction"] * last["elapsed_s"] - first["data_wait_fraction"] * first["elapsed_s"]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    return {"steps": [first["step"], last["step"]], "data_wait_fraction": round(waited / seconds, 4) if seconds > 0 else None,
            "seconds": round(seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    import torch

    import mim_hub
    from mim_hub.commands.arguments import default_num_workers

    gpu = torch.cuda.is_available() and not args.dry_run
    if not args.dry_run and not gpu:
        raise SystemExit("data: no GPU (use --dry-run on a CPU)")
    batch, steps, log_every = (4, 3, 1) if args.dry_run else (256, 40, 10)
    # more images than the run's steps take, so that no epoch boundary (where the loader refills,
    # each worker building a whole batch first) falls in the measured window: the first GPU run
    # (3,072 images, 12 steps an epoch) measured those refills more than the steady state
    count, size = (24, (64, 48)) if args.dry_run else ((steps + 8) * batch, (500, 375))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = {"images": count, "image_size": list(size), "batch_size": batch, "steps": steps, "cpus": os.cpu_count(), "runs": []}
    out_path = os.path.join(args.out, "data.json")
    with tempfile.TemporaryDirectory() as work:
        log_path = os.path.join(args.out, "data.log")
        started = time.time()
        write_imagefolder(os.path.join(work, "images"), count, size)
        result["write_jpegs_s"] = round(time.time() - started, 1)
        print(f"wrote {count} JPEGs in {result['write_jpegs_s']} s", flush=True)
        shards = os.path.join(work, "shards")
        result["prepare_shards_s"] = round(cli(["prepare-shards", "--dataset", f"imagefolder:{os.path.join(work, 'images')}", "--output", shards,
                                                "--max-side", "320", "--num-workers", "1" if args.dry_run else str(max(1, (os.cpu_count() or 2) - 1))],
                                               env, log_path), 1)
        print(f"prepare-shards: {result['prepare_shards_s']} s", flush=True)
        model_dir = os.path.join(work, "mae")
        dims = {} if not args.dry_run else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                                decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                                decoder_intermediate_size=64, image_size=32, patch_size=8)
        torch.manual_seed(0)
        config = mim_hub.MAEConfig(**dims, norm_pix_loss=True)
        mim_hub.MAEForPreTraining(config).save_pretrained(model_dir)
        side = config.image_size
        mim_hub.MAEImageProcessor(size={"height": side, "width": side}, crop_size={"height": side, "width": side}).save_pretrained(model_dir)
        tars = sorted(f for f in os.listdir(shards) if f.endswith(".tar"))
        spec = f"webdataset:{os.path.join(shards, tars[0].split('-')[0])}-*.tar"
        workers = [default_num_workers()]
        while workers:
            num_workers = workers.pop(0)
            run_dir = os.path.join(work, f"run-{num_workers}")
            argv = ["pretrain", "--model", model_dir, "--dataset", spec, "--output-dir", run_dir, "--batch-size", str(batch),
                    "--max-steps", str(steps), "--log-every", str(log_every), "--save-every", "0", "--num-workers", str(num_workers),
                    "--mixed-precision", "bf16" if gpu else "no", "--warmup-steps", "1"]
            seconds = cli(argv, env, log_path)
            with open(os.path.join(run_dir, "log.jsonl")) as handle:
                records = [json.loads(line) for line in handle]
            run = {"num_workers": num_workers, "wall_s": round(seconds, 1), "images_per_s": records[-1]["images_per_s"],
                   "data_wait_fraction_cumulative": records[-1]["data_wait_fraction"], "steady": steady_state(records),
                   "data_first_batch_s": records[0].get("data_first_batch_s"), "data_index_s": records[0].get("data_index_s")}
            result["runs"].append(run)
            with open(out_path, "w") as handle:
                json.dump(result, handle, indent=2)
            print(f"workers {num_workers}: {run['images_per_s']:.0f} images/s, data wait {100 * run['data_wait_fraction_cumulative']:.1f}% "
                  f"(steady {100 * (run['steady']['data_wait_fraction'] or 0):.1f}%)", flush=True)
            more = max(1, (os.cpu_count() or 2) - 1)
            if (run["steady"]["data_wait_fraction"] or 0) > 0.05 and more > num_workers and not args.dry_run:
                workers.append(more)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
