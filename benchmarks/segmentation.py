"""Learning signal of MIM pre-training for dense prediction: on `digits-seg`, UperNet on a
pre-trained MAE backbone against the same UperNet with a randomly initialised backbone, the same
recipe and budget, over several seeds.

    python benchmarks/segmentation.py [--pretrained DIR] [--pretrain-steps 600] [--steps 300] [--seeds 0,1,2]

Without `--pretrained` it first pre-trains a small MAE on the bundled digits with `mim-hub
pretrain` (the demo's recipe, a smaller ViT so that it runs in minutes on a laptop CPU); pass the
demo's `pretrained/` folder (`mim-hub demo`) to use that. Writes
`benchmarks/segmentation.json` and, per seed, `benchmarks/segmentation/seed<S>-{pretrained,scratch}.png`
(image | ground truth | prediction for test items).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import torch  # noqa: E402

import mim_hub  # noqa: E402
from mim_hub.training.data_segmentation import DigitsSegmentation  # noqa: E402
from mim_hub.training.segmentation import finetune_segmentation  # noqa: E402

# a small ViT for digits (32 px, patch 4): the demo's recipe at a size that pre-trains in minutes
SMALL_MAE = dict(image_size=32, patch_size=4, hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=384,
                 decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=256,
                 norm_pix_loss=True)


def pretrain(folder: str, steps: int, seed: int) -> str:
    from mim_hub.cli import main as cli

    start = os.path.join(folder, "init")
    torch.manual_seed(seed)
    mim_hub.MAEForPreTraining(mim_hub.MAEConfig(**SMALL_MAE)).save_pretrained(start)
    mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(start)
    out = os.path.join(folder, "pretrained")
    code = cli(["pretrain", "--model", start, "--dataset", "digits", "--output-dir", out, "--max-steps", str(steps), "--seed", str(seed),
                "--batch-size", "64", "--lr", "1e-3", "--warmup-steps", str(max(1, steps // 20)), "--crop-min-scale", "0.5",
                "--no-flip", "--save-every", "0", "--log-every", str(max(1, steps // 10))])
    if code:
        raise SystemExit(f"pre-training failed ({code})")
    return out


def write_markdown(report: dict, path: str, pictures: str) -> None:
    lines = ["# Segmentation learning signal on digits-seg", "",
             "Written by `python benchmarks/segmentation.py` (raw numbers in [segmentation.json](segmentation.json)): UperNet on an "
             "MAE backbone pre-trained on the bundled digits against the same UperNet with a randomly initialised backbone, the "
             "same recipe and number of steps, per seed (the seed sets the head's init, the data order and the augmentation).", "",
             f"- data: {report['dataset']}", f"- backbone: {report['backbone']}", f"- recipe: {report['recipe']}", "",
             "| seed | pre-trained mIoU | random init mIoU | pre-trained pixel acc. | random init pixel acc. |", "|---|---|---|---|---|"]
    for p, r in zip(report["runs"]["pretrained"], report["runs"]["scratch"]):
        lines.append(f"| {p['seed']} | {100 * p['mean_iou']:.2f} | {100 * r['mean_iou']:.2f} | {100 * p['pixel_accuracy']:.2f} | "
                     f"{100 * r['pixel_accuracy']:.2f} |")
    summary = report["summary"]
    lines += ["", f"Mean mIoU: pre-trained {100 * summary['pretrained']['mean_iou_mean']:.2f}, random init "
              f"{100 * summary['scratch']['mean_iou_mean']:.2f}; the pre-trained backbone is better in {report['pretrained_wins']} seeds.", "",
              "Pictures (test items; image | ground truth | prediction; black = background):", ""]
    for p in report["runs"]["pretrained"]:
        seed = p["seed"]
        lines += [f"- seed {seed}: [pre-trained]({pictures}/seed{seed}-pretrained.png), [random init]({pictures}/seed{seed}-scratch.png)"]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=None, help="a pre-trained MAE folder (default: pre-train one here)")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps per run (the same for both inits)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--channels", type=int, default=32, help="UperNet head width")
    parser.add_argument("--image-size", type=int, default=32, help="fine-tuning input size (the 64x64 canvases are resized)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", default=os.path.join(HERE, "segmentation.json"))
    parser.add_argument("--pictures", default=os.path.join(HERE, "segmentation"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = tempfile.mkdtemp(prefix="mim-seg-")
    started = time.time()
    model_dir = args.pretrained or pretrain(work, args.pretrain_steps, seed=0)
    pretrain_minutes = (time.time() - started) / 60
    train = DigitsSegmentation("train", size=args.train_size)
    test = DigitsSegmentation("test", size=args.test_size)
    runs = {"pretrained": [], "scratch": []}
    os.makedirs(args.pictures, exist_ok=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for init in runs:
            out = os.path.join(work, f"seed{seed}-{init}")
            began = time.time()
            _, metrics = finetune_segmentation(
                model_dir, train, test, output_dir=out, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                image_size=args.image_size, channels=args.channels, auxiliary_channels=max(8, args.channels // 2), from_scratch=init == "scratch",
                seed=seed, pictures=6, log_to_console=False)
            os.replace(os.path.join(out, "segmentation.png"), os.path.join(args.pictures, f"seed{seed}-{init}.png"))
            row = {"seed": seed, "mean_iou": metrics["eval_mean_iou"], "pixel_accuracy": metrics["eval_pixel_accuracy"],
                   "minutes": (time.time() - began) / 60}
            runs[init].append(row)
            print(f"seed {seed} {init:10s} mIoU {100 * row['mean_iou']:.2f}  pixel acc {100 * row['pixel_accuracy']:.2f}  "
                  f"({row['minutes']:.1f} min)", flush=True)
    summary = {init: {"mean_iou_mean": statistics.mean(r["mean_iou"] for r in rows),
                      "mean_iou_min": min(r["mean_iou"] for r in rows), "mean_iou_max": max(r["mean_iou"] for r in rows)}
               for init, rows in runs.items()}
    wins = sum(p["mean_iou"] > s["mean_iou"] for p, s in zip(runs["pretrained"], runs["scratch"]))
    report = {"dataset": f"digits-seg, 64x64, {args.train_size} train / {args.test_size} test items, 11 classes",
              "backbone": "MAE ViT " + ("(given)" if args.pretrained else f"{SMALL_MAE} pre-trained {args.pretrain_steps} steps on digits"),
              "pretrain_minutes": round(pretrain_minutes, 2),
              "recipe": f"UperNet (channels {args.channels}), {args.steps} steps, batch {args.batch_size}, AdamW lr {args.lr}, "
                        f"wd 0.05, layer decay 0.65, poly with 10% warm-up, {args.image_size} px",
              "runs": runs, "summary": summary, "pretrained_wins": f"{wins}/{len(runs['pretrained'])}"}
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    write_markdown(report, os.path.join(HERE, "segmentation.md"), os.path.relpath(args.pictures, HERE))
    print(json.dumps(summary, indent=2), f"pre-trained better in {wins} of {len(runs['pretrained'])} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
