"""`mim-hub eval`: frozen-feature evaluation of a saved model, kNN and/or a linear probe
(`mim_hub.training.evaluate`)."""

from __future__ import annotations

import argparse
import json
import os

from .arguments import add_data_arguments, data_settings, default_num_workers

# the linear probe's weight-decay grid (as training/evaluate.py's PROBE_WEIGHT_DECAYS, which imports torch)
PROBE_WEIGHT_DECAYS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def _weight_decay_choice(text: str):
    if text == "cv":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'cv', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"weight decay must be >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="saved model folder (any mim_hub model; its encoder is used)")
    parser.add_argument("--protocol", choices=("knn", "linear", "both"), default="both", help="which evaluation to run")
    add_data_arguments(parser, streaming=False)
    parser.add_argument("--k", type=int, default=20, help="neighbours for kNN")
    parser.add_argument("--temperature", type=float, default=0.07, help="kNN vote temperature")
    parser.add_argument("--linear-epochs", type=int, default=None, help="linear probe epochs (default 100; --probe mae: 90)")
    parser.add_argument("--probe", choices=("cv", "mae"), default="cv",
                        help="linear probe: 'cv' (SGD, weight decay by cross-validation; the default) or 'mae' (MAE's protocol: "
                             "LARS, BatchNorm without affine, no weight decay, effective batch 16384, lr 0.1 x batch / 256, 10 warm-up epochs)")
    parser.add_argument("--probe-batch-size", type=int, default=512, help="--probe mae: per-step batch; accumulation reaches the effective batch")
    parser.add_argument("--probe-effective-batch", type=int, default=16384, help="--probe mae: effective batch (MAE: 16384)")
    parser.add_argument("--linear-weight-decay", type=_weight_decay_choice, default="cv",
                        help="linear probe weight decay: a number, or 'cv' (default) to choose it from "
                             f"{list(PROBE_WEIGHT_DECAYS)} by 5-fold cross-validation on the training split")
    parser.add_argument("--batch-size", type=int, default=128, help="feature extraction batch size")
    parser.add_argument("--pooling", choices=("mean", "pooler", "cls"), default=None,
                        help="mean of patch tokens (default), the model's pooler_output, or the cls token (default of --probe mae)")
    parser.add_argument("--num-workers", type=int, default=default_num_workers(),
                        help="data loader worker processes decoding images (default: the CPUs less one, at most 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the linear probe")
    parser.add_argument("--output", default=None, help="write the results as JSON here")


def main(args: argparse.Namespace) -> int:
    import mim_hub  # noqa: F401  (the command's own imports, when it runs: transformers, the training code)
    from transformers import AutoImageProcessor, AutoModel

    from ..data import count_bad_images
    from ..data.labels import check_labelled
    from ..training.evaluate import evaluate_model
    from ..training.modelio import method_of_folder

    method_of_folder(args.model)
    model = AutoModel.from_pretrained(args.model)
    processor = AutoImageProcessor.from_pretrained(args.model)
    data = data_settings(args)
    train = data.images()
    eval_split = data.evaluation_split()
    if eval_split is None:
        raise ValueError(f"{args.dataset} has no split to evaluate on besides the training split {args.split!r}; "
                         "give --eval-split (e.g. --eval-split test)")
    test = data.images(eval_split)
    bad_image_log = os.path.join(os.path.dirname(os.path.abspath(args.output)), "bad_images.tsv") if args.output else None
    train.bad_image_log = test.bad_image_log = bad_image_log  # beside --output, as every command writes it (data.bad_image)
    check_labelled(train, test, "kNN and linear probes")  # one label space, every id in range (data/labels.py)
    results = evaluate_model(model, processor, train, test, protocol=args.protocol, k=args.k, temperature=args.temperature,
                             linear_epochs=args.linear_epochs or (90 if args.probe == "mae" else 100),
                             linear_weight_decay=args.linear_weight_decay, pooling=args.pooling or ("cls" if args.probe == "mae" else "mean"),
                             seed=args.seed, num_workers=args.num_workers, batch_size=args.batch_size, progress=True,
                             probe=args.probe, probe_batch_size=args.probe_batch_size, probe_effective_batch=args.probe_effective_batch)
    for name, value in results.items():
        is_setting = name == "linear_weight_decay" or (name.startswith("linear_mae_"))
        print(f"{name}: {value:g}" if is_setting else f"{name}: {100 * value:.2f}%")
    if bad_image_log:
        results["bad_images"] = count_bad_images(bad_image_log)
        print(f"bad_images: {results['bad_images']} (listed in {bad_image_log})")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0
