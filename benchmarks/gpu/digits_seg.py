"""GPU session, step 4: the digits-seg learning result with the step budget the CPU runs could not
afford (benchmarks/segmentation.md): UperNet on the demo's pre-trained MAE backbone against the same
UperNet with a randomly initialised backbone, 3 seeds, 64 px, 1200 steps of batch 32 (38,400 crops,
about the 3000 steps of batch 16 the CPU notes asked for, in fewer steps: six runs share one GPU, and
small steps cost launches, not arithmetic), the six runs side by side. Sized from the first GPU
session (2026-12-04, H200): the six runs together made about 33 steps/s, so 1200 steps take about
220 s with the backbone's pre-training (2400 steps, 45 s).

The backbone is the demo's (`mim-hub demo` pre-training recipe: ViT 192 wide, 6 blocks, patch 4,
2400 steps of batch 32 on the bundled digits); it is taken from --backbone when given (a carried
folder), else pre-trained here first with `mim-hub pretrain` and that recipe.

    python benchmarks/gpu/digits_seg.py --out DIR [--dry-run] [--backbone FOLDER]

Writes OUT/segmentation.json, OUT/segmentation.md and the pictures under OUT/segmentation/.
--dry-run: a 32-wide backbone, 2 pre-training and 2 fine-tuning steps at 32 px, one seed, on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, BATCH, SIZE = 1200, 32, 64


def pretrain_backbone(folder: str, env: dict, dry_run: bool) -> None:
    """The demo's pre-training (`mim-hub pretrain`, its recipe); the dry run: a 32-wide stand-in, 2 steps."""
    from mim_hub.training.demo import DEMO_RECIPE, demo_pretrain_arguments

    model, steps, batch = "mae-tiny-digits", DEMO_RECIPE["steps"], DEMO_RECIPE["batch_size"]
    if dry_run:
        import mim_hub

        model, steps, batch = os.path.join(folder + "-init"), 2, 8
        mim_hub.MAEForPreTraining(mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                                    decoder_num_attention_heads=2, decoder_intermediate_size=64)).save_pretrained(model)
        mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(model)
    argv = [sys.executable, "-m", "mim_hub", "pretrain", "--model", model, "--dataset", "digits", "--output-dir", folder,
            "--max-steps", str(steps), "--seed", "0", "--save-every", "0", "--log-every", "100", "--num-workers", "0" if dry_run else "4",
            *demo_pretrain_arguments(batch_size=batch, lr=DEMO_RECIPE["lr"], warmup_steps=min(DEMO_RECIPE["warmup_steps"], steps // 10 or 1),
                                     crop_min_scale=DEMO_RECIPE["crop_min_scale"])]
    print(f"pre-training the backbone ({steps} steps)", flush=True)
    subprocess.run(argv, cwd=ROOT, env=env, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--backbone", default=None, help="a pre-trained MAE folder (default: pre-train the demo's here)")
    args = parser.parse_args()
    import torch

    sys.path.insert(0, os.path.join(ROOT, "src"))
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("digits_seg: no GPU (use --dry-run on a CPU)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    timings = {}
    backbone = args.backbone
    if not backbone or not os.path.isfile(os.path.join(backbone, "model.safetensors")):
        backbone, started = os.path.join(args.out, "mae-digits"), time.time()
        pretrain_backbone(backbone, env, args.dry_run)
        timings["pretrain_s"] = round(time.time() - started, 1)
    steps, batch, size, train_size, test_size, seeds = (2, 4, 32, 8, 4, "0") if args.dry_run else (STEPS, BATCH, SIZE, 1000, 200, "0,1,2")
    output = os.path.join(args.out, "segmentation.json")
    argv = [sys.executable, os.path.join(ROOT, "benchmarks", "segmentation.py"), "--pretrained", backbone, "--image-size", str(size),
            "--steps", str(steps), "--batch-size", str(batch), "--train-size", str(train_size), "--test-size", str(test_size),
            "--seeds", seeds, "--jobs", "1" if args.dry_run else "6", "--work", os.path.join(args.out, "segmentation-runs"),
            "--output", output, "--pictures", os.path.join(args.out, "segmentation")]
    started = time.time()
    subprocess.run(argv, cwd=ROOT, env=env, check=True)
    timings["finetune_s"] = round(time.time() - started, 1)
    with open(output) as handle:
        report = json.load(handle)
    report["gpu_run"] = {"backbone": "carried" if backbone == args.backbone else "pre-trained in this step", **timings,
                         "steps": steps, "batch_size": batch, "image_size": size}
    with open(output, "w") as handle:
        json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
