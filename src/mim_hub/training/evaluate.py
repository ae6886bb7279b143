"""Frozen-feature evaluation: kNN (cosine similarity, k = 20, temperature-weighted votes as in
the self-supervised literature) and a linear probe (MAE's protocol: a BatchNorm without affine
parameters, then a linear layer, trained on frozen pooled features). The probe's weight decay is
chosen by stratified 5-fold cross-validation (3 repeats) on the training split only (the test split is never
looked at), from a fixed grid, for every feature set alike: on a small dataset an unregularised
probe fits the training set exactly and its test accuracy drifts with how long it is trained.

Features are the mean of the encoder's patch tokens (`last_hidden_state[:, num_prefix_tokens:]`: the
cls token, where the model has one, is left out), computed once with the model's own image processor."""

from __future__ import annotations

import logging

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import BadImage
from .probe_mae import mae_linear_probe

logger = logging.getLogger("mim_hub.eval")


PROBE_WEIGHT_DECAYS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)




class ProcessedImages(torch.utils.data.Dataset):
    """(pixel values, label, readable) per item of an `ImageDataset`, through the model's image
    processor; an unreadable image gives `readable=False` (and is left out of the features), or
    raises with `on_bad_image="error"`."""

    def __init__(self, images, processor):
        self.images, self.processor = images, processor
        self.shape = None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        try:
            pixels = self.images.try_image(index, lambda image: self.processor(image.convert("RGB"), return_tensors="pt").pixel_values[0])
            return pixels, int(self.images.labels[index]), True
        except BadImage as bad:  # (a processor error on a readable image is raised: not the data's)
            self.images._bad(index, bad.error)
            size = self.processor.crop_size if getattr(self.processor, "do_center_crop", False) else self.processor.size
            height, width = size.get("height", size.get("shortest_edge")), size.get("width", size.get("shortest_edge"))
            return torch.zeros(3, height, width), int(self.images.labels[index]), False


def check_features(features: torch.Tensor, what: str = "features") -> None:
    """Refuse features no accuracy can be computed from: NaN or infinite values (a broken model
    would otherwise score at chance with no word), or one feature vector for every image."""
    bad = ~torch.isfinite(features).all(dim=1)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} of {len(features)} feature vectors are NaN or infinite (the first is "
                         f"image {int(bad.nonzero()[0])}): the model's outputs are not finite, so an accuracy would mean "
                         "nothing; check its weights")
    if len(features) > 1 and bool((features == features[0]).all()):
        raise ValueError(f"{what}: every image has the same feature vector: the model's features carry no information")


def check_finite_weights(model, source: str = "model") -> None:
    """Refuse a model with NaN or infinite parameters, naming them."""
    broken = [name for name, p in model.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]
    if broken:
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise ValueError(f"{source}: weights with NaN or infinite values: {', '.join(broken[:3])}{more}; "
                         "evaluating it would report chance-level accuracy")


def check_labels(labels, what: str) -> None:
    """Refuse labels with fewer than two classes: an accuracy over one class says nothing."""
    classes = torch.as_tensor(labels).unique()
    if len(classes) < 2:
        raise ValueError(f"{what} has {len(classes)} class{'' if len(classes) == 1 else 'es'} "
                         f"({classes.tolist()}): classification needs at least 2")


@torch.no_grad()
def extract_features(model, processor, images, *, batch_size: int = 128, pooling: str = "mean", num_workers: int = 0,
                     return_labels: bool = False, progress: bool = False, pixel_transform=None):
    """[N, D] frozen features of an `ImageDataset` (encoder of any mim_hub model), decoded and
    processed in `num_workers` DataLoader workers; only the features are kept. With
    `return_labels`, (features, labels) of the readable images (unreadable ones are left out).
    `pixel_transform`: applied to each batch of processed pixels before the encoder (e.g. the
    patch shuffle of `position_check`)."""
    encoder = getattr(model, model.base_model_prefix, model) if not hasattr(model, "embeddings") else model
    encoder.eval()
    device = next(encoder.parameters()).device
    loader = torch.utils.data.DataLoader(ProcessedImages(images, processor), batch_size=batch_size, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    feats, labels = [], []
    for pixels, batch_labels, readable in tqdm(loader, desc=f"features {images.name}", disable=not progress, unit="batch"):
        if pixel_transform is not None:
            pixels = pixel_transform(pixels)
        out = encoder(pixels.to(device))
        if pooling == "pooler" and getattr(out, "pooler_output", None) is not None:
            feature = out.pooler_output.float()
        elif pooling == "cls":
            if encoder.num_prefix_tokens < 1:
                raise ValueError(f"{type(encoder).__name__} has no cls token: use --pooling mean")
            feature = out.last_hidden_state[:, 0].float()
        else:
            # the mean patch token (the encoder states how many prefix tokens come first; a CNN averages its map)
            feature = encoder.mean_patch_feature(out.last_hidden_state).float()
        bad = ~torch.isfinite(feature).all(dim=1)
        if bad.any():  # stop at the first broken batch, naming an image
            first = sum(len(f) for f in feats) + int(bad.nonzero()[0])
            raise ValueError(f"features of {int(bad.sum())} images of a batch are NaN or infinite (the first is readable image {first}): "
                             "the model's outputs are not finite, so an accuracy would mean nothing; check its weights")
        feats.append(feature[readable.to(device)].cpu())
        labels.append(batch_labels[readable])
    features = torch.cat(feats)
    return (features, torch.cat(labels)) if return_labels else features


def knn_accuracy(train_x, train_y, test_x, test_y, *, k: int = 20, temperature: float = 0.07, num_classes: int | None = None) -> float:
    """Weighted kNN: cosine similarities of the k nearest training features, votes exp(s / T).
    Similarities are computed in blocks (`knn_topk`), so memory stays bounded for millions of
    training features."""
    check_features(torch.as_tensor(train_x), "kNN training features")
    check_features(torch.as_tensor(test_x), "kNN test features")
    train_x, test_x = nn.functional.normalize(torch.as_tensor(train_x).float(), dim=1), nn.functional.normalize(torch.as_tensor(test_x).float(), dim=1)
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    sims, idx = knn_topk(train_x, test_x, min(k, len(train_x)))
    votes = torch.zeros(len(test_x), num_classes).scatter_add_(1, train_y[idx], (sims / temperature).exp())
    return (votes.argmax(1) == test_y).float().mean().item()


def knn_topk(train_x, test_x, k: int, *, test_chunk: int = 1024, train_chunk: int = 65536):
    """(similarities, indices) of the k largest `test_x @ train_x.T` per test row, computed
    block by block ([test_chunk, train_chunk] at a time, a running top-k merged per block)."""
    all_sims, all_idx = [], []
    for t in range(0, len(test_x), test_chunk):
        queries = test_x[t:t + test_chunk]
        best_sims = torch.full((len(queries), 0), float("-inf"))
        best_idx = torch.zeros((len(queries), 0), dtype=torch.long)
        for s in range(0, len(train_x), train_chunk):
            block = queries @ train_x[s:s + train_chunk].T
            sims, idx = block.topk(min(k, block.shape[1]), dim=1)
            best_sims, order = torch.cat([best_sims, sims], 1).topk(min(k, best_sims.shape[1] + sims.shape[1]), dim=1)
            best_idx = torch.cat([best_idx, idx + s], 1).gather(1, order)
        all_sims.append(best_sims)
        all_idx.append(best_idx)
    return torch.cat(all_sims), torch.cat(all_idx)


def probe_accuracies(train_x, train_y, test_x, test_y, weight_decays, *, epochs: int = 100, seed: int = 0, lr: float = 0.01,
                     batch_size: int = 256) -> list[float]:
    """MAE's linear probe on frozen features, BatchNorm1d(affine=False) + Linear, trained with SGD
    (momentum 0.9, coupled weight decay) and a cosine schedule, once per weight decay in
    `weight_decays`; returns their test accuracies.

    The probes share one initialisation and one sample order and are trained together as a
    stack of heads (their losses are independent, so each learns exactly as if trained alone);
    a grid of weight decays costs about as much as one probe. The global RNG is not touched."""
    train_x, test_x = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(test_x, dtype=torch.float32)
    check_features(train_x, "linear probe training features")
    check_features(test_x, "linear probe test features")
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    decays = torch.tensor([float(w) for w in weight_decays])
    heads = len(decays)
    generator = torch.Generator().manual_seed(seed)
    norm = nn.BatchNorm1d(train_x.shape[1], affine=False, eps=1e-6)
    weight = nn.init.trunc_normal_(torch.empty(num_classes, train_x.shape[1]), std=0.01, generator=generator)
    # [features, heads, classes]: every head's logits come from one matrix product
    weight = nn.Parameter(weight.T[:, None].expand(-1, heads, -1).contiguous())
    bias = nn.Parameter(torch.zeros(heads, num_classes))

    def logits_of(features):  # [heads, samples, classes]
        return (features @ weight.flatten(1)).unflatten(1, (heads, num_classes)).transpose(0, 1) + bias[:, None]

    optimizer = torch.optim.SGD([weight, bias], lr=lr * max(1, batch_size) / 256 * 10, momentum=0.9)
    steps = epochs * max(1, (len(train_x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(epochs):
        norm.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            logits = logits_of(norm(train_x[batch]))
            # the mean loss of each head, summed: every head gets its own gradient
            loss = nn.functional.cross_entropy(logits.reshape(-1, num_classes), train_y[batch].repeat(heads)) * heads
            optimizer.zero_grad()
            loss.backward()
            with torch.no_grad():  # SGD's coupled weight decay, one value per head
                weight.grad.add_(weight * decays[:, None])
                bias.grad.add_(bias * decays[:, None])
            optimizer.step()
            schedule.step()
    norm.eval()
    with torch.no_grad():
        predictions = logits_of(norm(test_x)).argmax(-1)
        return (predictions == test_y).float().mean(1).tolist()


def linear_probe_accuracy(train_x, train_y, test_x, test_y, *, epochs: int = 100, seed: int = 0, lr: float = 0.01,
                          weight_decay: float = 0.0, batch_size: int = 256) -> float:
    """Test accuracy of one linear probe (see `probe_accuracies`)."""
    return probe_accuracies(train_x, train_y, test_x, test_y, [weight_decay], epochs=epochs, seed=seed, lr=lr,
                            batch_size=batch_size)[0]


def stratified_folds(labels, folds: int = 5, seed: int = 0) -> list[torch.Tensor]:
    """`folds` disjoint index sets covering every sample, each class spread evenly across them."""
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    fold_of = torch.empty(len(labels), dtype=torch.long)
    offset = 0
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold_of[members] = (torch.arange(len(members)) + offset) % folds
        offset += len(members)  # the next class starts where this one stopped, so fold sizes stay even
    return [(fold_of == f).nonzero().flatten() for f in range(folds)]


def select_probe_weight_decay(train_x, train_y, *, grid=PROBE_WEIGHT_DECAYS, folds: int = 5, repeats: int = 3, epochs: int = 100,
                              seed: int = 0, progress: bool = False) -> tuple[float, dict]:
    """The weight decay of `grid` whose probe scores best in stratified k-fold cross-validation on
    the training features, repeated `repeats` times with other fold assignments (one split alone
    is too noisy to rank close values; ties go to the smaller weight decay). Returns (choice,
    {weight decay: mean validation accuracy}). `progress`: a tqdm bar over the folds x repeats
    probes (each trains the whole grid at once)."""
    from tqdm.auto import tqdm

    train_x, train_y = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(train_y)
    totals = torch.zeros(len(grid))
    bar = tqdm(total=folds * repeats, desc=f"probe weight decay ({folds}-fold CV x {repeats})", unit="fold", disable=not progress)
    for repeat in range(repeats):
        splits = stratified_folds(train_y, folds, seed + repeat)
        if min(len(s) for s in splits) == 0:
            raise ValueError(f"{len(train_y)} training samples are too few for {folds}-fold cross-validation "
                             "of the probe's weight decay; give the weight decay instead")
        for held_out in splits:
            keep = torch.ones(len(train_y), dtype=torch.bool)
            keep[held_out] = False
            totals += torch.tensor(probe_accuracies(train_x[keep], train_y[keep], train_x[held_out], train_y[held_out], grid,
                                                    epochs=epochs, seed=seed))
            bar.update()
    bar.close()
    scores = {float(w): (total / (folds * repeats)).item() for w, total in zip(grid, totals)}
    best = max(scores.values())
    choice = min(w for w, score in scores.items() if score >= best - 1e-9)
    return choice, scores


def linear_probe(train_x, train_y, test_x, test_y, *, epochs: int = 100, seed: int = 0, weight_decay="cv", progress: bool = False) -> dict:
    """{"linear": test accuracy, "linear_weight_decay": the weight decay used,
    "linear_unregularised": test accuracy of the same probe without weight decay (MAE's ImageNet
    setting), reported beside it, never used to choose}; weight_decay="cv" chooses the weight
    decay with `select_probe_weight_decay` on the training features alone."""
    if weight_decay == "cv":
        weight_decay, _ = select_probe_weight_decay(train_x, train_y, epochs=epochs, seed=seed, progress=progress)
    # both probes in one stack (same initialisation and sample order)
    chosen, unregularised = probe_accuracies(train_x, train_y, test_x, test_y, [weight_decay, 0.0], epochs=epochs, seed=seed)
    return {"linear": chosen, "linear_weight_decay": weight_decay, "linear_unregularised": unregularised}


def evaluate_model(model, processor, train_images, test_images, *, protocol: str = "both", k: int = 20, temperature: float = 0.07,
                   linear_epochs: int = 100, linear_weight_decay="cv", pooling: str = "mean", seed: int = 0, num_workers: int = 0,
                   batch_size: int = 128, progress: bool = False, probe: str = "cv", probe_batch_size: int = 512,
                   probe_effective_batch: int = 16384) -> dict:
    check_labels(train_images.labels, f"the training split of {getattr(train_images, 'name', 'the dataset')}")
    check_finite_weights(model, getattr(model.config, "_name_or_path", "") or "model")
    options = dict(pooling=pooling, num_workers=num_workers, batch_size=batch_size, return_labels=True, progress=progress)
    train_x, train_y = extract_features(model, processor, train_images, **options)
    test_x, test_y = extract_features(model, processor, test_images, **options)
    results = {}
    if protocol in ("knn", "both"):
        results["knn"] = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=temperature)
    if protocol in ("linear", "both") and probe == "mae":
        results.update(mae_linear_probe(train_x, train_y, test_x, test_y, effective_batch=probe_effective_batch,
                                        batch_size=probe_batch_size, epochs=linear_epochs, seed=seed))
    elif protocol in ("linear", "both"):
        results.update(linear_probe(train_x, train_y, test_x, test_y, epochs=linear_epochs, seed=seed,
                                    weight_decay=linear_weight_decay, progress=progress))
    return results


