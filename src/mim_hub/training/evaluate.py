"""Frozen-feature evaluation: kNN (cosine similarity, k = 20, temperature-weighted votes as in
the self-supervised literature) and a linear probe (MAE's protocol: a BatchNorm without affine
parameters, then a linear layer, trained on frozen pooled features).

Features are the mean of the encoder's patch tokens (`last_hidden_state[:, 1:]` for models with a
cls token), computed once with the model's own image processor."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch
from torch import nn

from .data import add_dataset_arguments, dataset_from_args

logger = logging.getLogger("mim_hub.eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="saved model folder (any mim_hub model; its encoder is used)")
    parser.add_argument("--protocol", choices=("knn", "linear", "both"), default="both", help="which evaluation to run")
    add_dataset_arguments(parser)
    parser.add_argument("--k", type=int, default=20, help="neighbours for kNN")
    parser.add_argument("--temperature", type=float, default=0.07, help="kNN vote temperature")
    parser.add_argument("--linear-epochs", type=int, default=100, help="linear probe epochs")
    parser.add_argument("--batch-size", type=int, default=128, help="feature extraction batch size")
    parser.add_argument("--pooling", choices=("mean", "pooler"), default="mean", help="mean of patch tokens, or the model's pooler_output")
    parser.add_argument("--seed", type=int, default=0, help="seed of the linear probe")
    parser.add_argument("--output", default=None, help="write the results as JSON here")


@torch.no_grad()
def extract_features(model, processor, images, *, batch_size: int = 128, pooling: str = "mean") -> torch.Tensor:
    """[N, D] frozen features of an `ImageDataset` (encoder of any mim_hub model)."""
    encoder = getattr(model, model.base_model_prefix, model) if not hasattr(model, "embeddings") else model
    encoder.eval()
    feats = []
    for start in range(0, len(images), batch_size):
        batch = [images.image(i) for i in range(start, min(len(images), start + batch_size))]
        pixels = processor(batch, return_tensors="pt").pixel_values
        out = encoder(pixels)
        if pooling == "pooler" and getattr(out, "pooler_output", None) is not None:
            feats.append(out.pooler_output.float())
        else:
            tokens = out.last_hidden_state
            has_cls = tokens.shape[1] != _num_patches(encoder.config)
            feats.append((tokens[:, 1:] if has_cls else tokens).mean(1).float())
    return torch.cat(feats)


def _num_patches(config) -> int:
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    return (size // config.patch_size) ** 2


def knn_accuracy(train_x, train_y, test_x, test_y, *, k: int = 20, temperature: float = 0.07, num_classes: int | None = None) -> float:
    """Weighted kNN: cosine similarities of the k nearest training features, votes exp(s / T)."""
    train_x, test_x = nn.functional.normalize(train_x, dim=1), nn.functional.normalize(test_x, dim=1)
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    sims, idx = (test_x @ train_x.T).topk(min(k, len(train_x)), dim=1)
    votes = torch.zeros(len(test_x), num_classes).scatter_add_(1, train_y[idx], (sims / temperature).exp())
    return (votes.argmax(1) == test_y).float().mean().item()


def linear_probe_accuracy(train_x, train_y, test_x, test_y, *, epochs: int = 100, seed: int = 0, lr: float = 0.01,
                          weight_decay: float = 0.0, batch_size: int = 256) -> float:
    """MAE's linear probe on frozen features: BatchNorm1d(affine=False) + Linear, trained with
    SGD (momentum 0.9) and a cosine schedule; returns test accuracy."""
    generator = torch.Generator().manual_seed(seed)
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    torch.manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(train_x.shape[1], affine=False, eps=1e-6), nn.Linear(train_x.shape[1], num_classes))
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr * max(1, batch_size) / 256 * 10, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * max(1, (len(train_x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:
                continue
            loss = nn.functional.cross_entropy(head(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    with torch.no_grad():
        return (head(test_x).argmax(1) == test_y).float().mean().item()


def evaluate_model(model, processor, train_images, test_images, *, protocol: str = "both", k: int = 20, temperature: float = 0.07,
                   linear_epochs: int = 100, pooling: str = "mean", seed: int = 0) -> dict:
    train_x = extract_features(model, processor, train_images, pooling=pooling)
    test_x = extract_features(model, processor, test_images, pooling=pooling)
    results = {}
    if protocol in ("knn", "both"):
        results["knn"] = knn_accuracy(train_x, train_images.labels, test_x, test_images.labels, k=k, temperature=temperature)
    if protocol in ("linear", "both"):
        results["linear"] = linear_probe_accuracy(train_x, train_images.labels, test_x, test_images.labels, epochs=linear_epochs, seed=seed)
    return results


def main(args: argparse.Namespace) -> int:
    import mim_hub  # noqa: F401
    from transformers import AutoImageProcessor, AutoModel

    from .modelio import method_of_folder

    method_of_folder(args.model)
    model = AutoModel.from_pretrained(args.model)
    processor = AutoImageProcessor.from_pretrained(args.model)
    train = dataset_from_args(args)
    eval_split = args.eval_split or ("test" if args.dataset == "digits" else None)
    if eval_split is None:
        raise ValueError("give --eval-split (the split to evaluate on) for this dataset")
    test = dataset_from_args(args, split=eval_split)
    if min(train.labels) < 0:
        raise ValueError(f"{args.dataset} has no labels: kNN and linear probes need a labelled dataset")
    results = evaluate_model(model, processor, train, test, protocol=args.protocol, k=args.k, temperature=args.temperature,
                             linear_epochs=args.linear_epochs, pooling=args.pooling, seed=args.seed)
    for name, value in results.items():
        print(f"{name}: {100 * value:.2f}%")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0
