"""Semantic segmentation: data sources, the joint augmentation, the IoU metric, and
`mim-hub finetune --task semantic-segmentation` end to end (tiny model, a few steps)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import mim_hub
from mim_hub.cli import main as cli
from mim_hub.training.data import DatasetError
from mim_hub.training.data_segmentation import IGNORE_INDEX, DigitsSegmentation, HFSegmentation, SegFolder, load_segmentation
from mim_hub.training.segmentation import JointTransform, confusion_matrix, segmentation_metrics, segmentation_stages


def test_digits_seg_is_deterministic_and_labels_the_strokes():
    first, again = DigitsSegmentation("train", size=4), DigitsSegmentation("train", size=4)
    image, label = first.item(3)
    image2, label2 = again.item(3)
    assert np.array_equal(np.asarray(image), np.asarray(image2)) and np.array_equal(label, label2)
    assert image.size == (64, 64) and label.shape == (64, 64) and first.num_labels == 11
    assert set(np.unique(label)) - {0} and set(np.unique(label)) <= set(range(11))
    grey = np.asarray(image).max(axis=2)
    assert grey[label > 0].min() > 0 and (grey[label == 0] < 200).all()  # labels lie on ink
    assert not np.array_equal(DigitsSegmentation("train", size=4, seed=1).item(3)[1], label)
    assert not np.array_equal(DigitsSegmentation("test", size=4).item(3)[1], label)
    with pytest.raises(IndexError):
        first.item(4)


def test_joint_transform_keeps_image_and_label_aligned():
    label = np.zeros((48, 48), dtype=np.int64)
    label[:, :20] = 1
    label[30:, 30:] = 2
    grey = np.where(label == 1, 220, np.where(label == 2, 120, 0)).astype(np.uint8)
    image = Image.fromarray(np.stack([grey] * 3, axis=-1))
    transform = JointTransform(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), train=True, jitter=0.0)
    for seed in range(6):
        pixels, out = transform(image, label, np.random.default_rng(seed))
        assert pixels.shape == (3, 32, 32) and out.shape == (32, 32) and out.dtype == np.int64
        bright = pixels[0] > 170 / 255
        agreement = ((out == 1) == bright).mean()
        assert agreement > 0.93, (seed, agreement)
        assert set(np.unique(out)) <= {0, 1, 2}  # nearest-neighbour: no blended ids


def test_iou_metric():
    label = np.array([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    prediction = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    confusion = confusion_matrix(prediction, label, 4)
    assert confusion.sum() == 7  # the ignored pixel is not counted
    metrics = segmentation_metrics(confusion, ["a", "b", "c", "d"])
    iou = metrics["per_class_iou"]
    assert iou["a"] == pytest.approx(1 / 3) and iou["b"] == pytest.approx(3 / 4) and iou["c"] == pytest.approx(1 / 2)
    assert iou["d"] is None  # absent from both: left out of the mean
    assert metrics["mean_iou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(5 / 7)


def _segfolder(root, count=4, size=40):
    os.makedirs(root / "images")
    os.makedirs(root / "labels")
    rng = np.random.default_rng(0)
    for i in range(count):
        label = np.zeros((size, size), dtype=np.uint8)
        label[rng.integers(0, 20):, : rng.integers(10, 30)] = 1 + i % 2
        label[:3] = IGNORE_INDEX
        Image.fromarray((label * 90).astype(np.uint8)).convert("RGB").save(root / "images" / f"img{i}.jpg")
        Image.fromarray(label, mode="L").save(root / "labels" / f"img{i}.png")
    (root / "classes.txt").write_text("background\nleft\nright\n")
    return root


def test_segfolder_and_datasets_sources(tmp_path):
    folder = SegFolder(str(_segfolder(tmp_path / "seg")))
    image, label = folder.item(1)
    assert len(folder) == 4 and folder.label_names == ["background", "left", "right"]
    assert label.shape == (image.height, image.width) and label.max() == IGNORE_INDEX
    reduced = SegFolder(str(tmp_path / "seg"), reduce_labels=True).item(1)[1]
    assert (reduced[label == 0] == IGNORE_INDEX).all() and (reduced[label == 2] == 1).all()
    (tmp_path / "seg" / "images" / "extra.png").write_bytes((tmp_path / "seg" / "labels" / "img0.png").read_bytes())
    with pytest.raises(DatasetError, match="without a label PNG"):
        SegFolder(str(tmp_path / "seg"))
    import datasets

    data = datasets.Dataset.from_dict({"image": [image, image], "annotation": [Image.fromarray(label.astype(np.uint8))] * 2},
                                      features=datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()}))
    data.save_to_disk(str(tmp_path / "disk"))
    source = load_segmentation(str(tmp_path / "disk"))
    assert isinstance(source, HFSegmentation) and np.array_equal(source.item(0)[1], label)
    with pytest.raises(DatasetError, match="label map column"):
        HFSegmentation(data.rename_column("annotation", "other"), name="x")


def test_recipe_stages():
    vit = mim_hub.MAEConfig()
    assert segmentation_stages(vit) == (["stage4", "stage6", "stage8", "stage12"], True)
    swin = mim_hub.SimMIMConfig(backbone="swin")
    assert segmentation_stages(swin) == (["stage1", "stage2", "stage3", "stage4"], False)
    hybrid = mim_hub.MRMAEConfig(backbone="convvit")
    assert segmentation_stages(hybrid) == (["conv1", "conv2", "stage11"], False)


def test_finetune_semantic_segmentation_cli(tmp_path):
    config = mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                               decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                               decoder_intermediate_size=64)
    model_dir = tmp_path / "mae"
    torch.manual_seed(0)
    pretrained = mim_hub.MAEForPreTraining(config)
    pretrained.save_pretrained(model_dir)
    mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(model_dir)
    data = _segfolder(tmp_path / "seg")
    out = tmp_path / "out"
    code = cli(["finetune", "--task", "semantic-segmentation", "--model", str(model_dir), "--dataset", f"segfolder:{data}",
                "--eval-split", "train", "--output-dir", str(out), "--max-steps", "2", "--batch-size", "2", "--decoder-channels", "16",
                "--pictures", "2"])
    assert code == 0
    metrics = json.load(open(out / "metrics.json"))
    assert 0 <= metrics["eval_mean_iou"] <= 1 and "eval_iou_left" in metrics and 0 <= metrics["eval_pixel_accuracy"] <= 1
    card = (out / "README.md").read_text()
    assert "mIoU" in card and "image-segmentation" in card and f"{100 * metrics['eval_mean_iou']:.2f}" in card
    assert Image.open(out / "segmentation.png").size[0] == 3 * 3 * 32  # image | truth | prediction, x3
    from transformers import AutoModelForSemanticSegmentation, pipeline

    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    assert isinstance(model.backbone, mim_hub.MAEBackbone) and model.config.id2label[1] == "left"
    # the fine-tuned backbone started from the pre-trained encoder
    torch.testing.assert_close(model.backbone.mae.embeddings.cls_token, pretrained.mae.embeddings.cls_token, rtol=0.05, atol=1e-2)
    results = pipeline("image-segmentation", model=str(out))(Image.open(data / "images" / "img0.jpg"))
    assert results and all(r["mask"].size == (40, 40) for r in results)
    assert {r["label"] for r in results} <= {"background", "left", "right"}


def test_finetune_semantic_segmentation_refuses_bad_data(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli(["finetune", "--task", "semantic-segmentation", "--model", str(tmp_path), "--dataset", f"segfolder:{tmp_path / 'empty'}",
                "--output-dir", str(tmp_path / "out")])
    assert code == 2 and "segfolder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
