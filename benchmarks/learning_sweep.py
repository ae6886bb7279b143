"""Search the demo's pre-training recipe on the digits protocol (how DEMO_RECIPE was chosen).

Each variant is a set of `mim-hub pretrain` arguments that replace those of the starting point
BASE (batch 128 x 600 steps, lr 5e-4: the demo's recipe before this sweep); every variant is
pre-trained from scratch and scored on frozen mean-pooled features (kNN k=20 T=0.07, linear
probe) and on the held-out masked-reconstruction loss, exactly as `benchmarks/learning.py`.
Variants run in parallel processes (on a GPU several fit at once; on CPU give each its threads).

    python benchmarks/learning_sweep.py --variants sweep.json --seeds 0 [--jobs 4] [--output sweep.jsonl]

`sweep.json` maps a name to an argument list, e.g. {"lr1e-3": ["--lr", "1e-3"]}. The number of
images seen (steps x batch) is what the 10-minute demo budget on 2 CPU cores limits: keep it at
or under 600 x 128 when comparing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

BASE = ["--batch-size", "128", "--lr", "5e-4", "--warmup-steps", "40", "--crop-min-scale", "0.5", "--no-flip"]


def _override(base: list[str], extra: list[str]) -> list[str]:
    """Arguments of `base` with every option named in `extra` replaced (flags appended once)."""
    result, i = [], 0
    named = {a for a in extra if a.startswith("--")}
    while i < len(base):
        if base[i] in named:
            i += 1 if (i + 1 >= len(base) or base[i + 1].startswith("--")) else 2
            continue
        result.append(base[i])
        i += 1
    return result + extra


def run_variant(name: str, extra: list[str], seed: int, steps: int, threads: int, workdir: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    import mim_hub  # noqa: F401
    from transformers import AutoImageProcessor

    from mim_hub.models.mae import MAEForPreTraining
    from mim_hub.cli import main as mim_hub_main
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.evaluate import evaluate_model

    out = os.path.join(workdir, f"{name}-seed{seed}")
    args = _override(BASE, extra)
    if "--max-steps" not in args:
        args += ["--max-steps", str(steps)]
    argv = ["--model", "mae-tiny-digits", "--dataset", "digits", "--output-dir", out, "--seed", str(seed),
            "--save-every", "100000", "--log-every", "50", *args]
    started = time.time()
    if mim_hub_main(["pretrain", *argv]) != 0:
        raise RuntimeError(f"mim-hub pretrain {' '.join(argv)} failed")
    minutes = (time.time() - started) / 60
    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    processor = AutoImageProcessor.from_pretrained(out)
    model = MAEForPreTraining.from_pretrained(out).eval()
    scores = evaluate_model(model.mae, processor, train, test, seed=seed)
    pixels = processor([test.image(i) for i in range(len(test))], return_tensors="pt").pixel_values
    noise = torch.rand(len(test), 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        scores["heldout_loss"] = model(pixels, noise=noise).loss.item()
    return {"name": name, "seed": seed, "args": args, "pretrain_minutes": round(minutes, 2), **scores}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="JSON file: name -> extra pretrain arguments")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per job")
    parser.add_argument("--output", default="outputs/learning_sweep.jsonl")
    args = parser.parse_args()
    with open(args.variants) as handle:
        variants = json.load(handle)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="mim_hub_sweep_")
    tasks = [(name, extra, seed) for name, extra in variants.items() for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool, open(args.output, "a") as log:
        futures = [pool.submit(run_variant, name, extra, seed, args.steps, args.threads, workdir) for name, extra, seed in tasks]
        for future in futures:
            try:
                row = future.result()
            except Exception as error:  # one broken variant must not lose the others' results
                row = {"error": repr(error)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            if "error" in row:
                print(row, flush=True)
            else:
                print(f"{row['name']:<24} seed {row['seed']}  knn {row['knn'] * 100:5.1f}  linear {row['linear'] * 100:5.1f}  "
                      f"heldout {row['heldout_loss']:.3f}  ({row['pretrain_minutes']:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
