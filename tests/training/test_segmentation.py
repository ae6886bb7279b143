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
from mim_hub.data import DatasetError
from mim_hub.data import IGNORE_INDEX, load_segmentation
from mim_hub.data.segmentation import HFSegmentation
from mim_hub.data.sources.digits_seg import DigitsSegmentation
from mim_hub.data.sources.segfolder import SegFolder
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


@pytest.mark.slow
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


# ---- sliding-window evaluation ----------------------------------------------------------------

class _Output:
    def __init__(self, logits):
        self.logits = logits


class _WindowIndex(torch.nn.Module):
    """Stub segmenter: every window's logits are [window number, 1] everywhere (windows numbered
    in the order they are run), so the averaged logits show exactly which windows covered a pixel."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls, self.shapes = 0, []

    def forward(self, pixel_values):
        self.shapes.append(tuple(pixel_values.shape))
        n, _, h, w = pixel_values.shape
        index = torch.arange(self.calls, self.calls + n, dtype=torch.float32)
        self.calls += n
        return _Output(torch.stack([index[:, None, None].expand(n, h, w), torch.ones(n, h, w)], dim=1))


class _Identity(torch.nn.Module):
    """Stub segmenter whose logits are its input (position-dependent), optionally at half resolution."""

    def __init__(self, half: bool = False):
        super().__init__()
        self.weight, self.half, self.inputs = torch.nn.Parameter(torch.zeros(())), half, []

    def forward(self, pixel_values):
        self.inputs.append(pixel_values.clone())
        return _Output(pixel_values[:, :, ::2, ::2] if self.half else pixel_values + 0)


def test_window_starts_follow_mmseg():
    from mim_hub.training.segmentation import window_starts

    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]  # the last window ends flush with the edge
    assert window_starts(32, 32, 21) == [0] and window_starts(20, 32, 21) == [0]  # smaller than the crop: one (padded) window
    assert window_starts(64, 32, 21) == [0, 21, 32]


def test_slide_averages_overlapping_windows_exactly():
    from mim_hub.training.segmentation import slide_logits

    model = _WindowIndex()
    logits, count = slide_logits(model, torch.zeros(3, 10, 11), crop_size=4, stride=3, batch_size=5, return_count=True)
    rows, cols = [0, 3, 6], [0, 3, 6, 7]  # window_starts(10, 4, 3), window_starts(11, 4, 3)
    assert model.calls == 12 and [s[0] for s in model.shapes] == [5, 5, 2] and all(s[2:] == (4, 4) for s in model.shapes)
    expected_count = torch.zeros(10, 11)
    expected_sum = torch.zeros(10, 11)
    for k, (y, x) in enumerate((y, x) for y in rows for x in cols):  # windows run row by row
        expected_count[y:y + 4, x:x + 4] += 1
        expected_sum[y:y + 4, x:x + 4] += k
    assert torch.equal(count, expected_count)
    assert count[3, 0] == 2 and count[3, 3] == 4 and count[0, 7] == 2 and count[6, 6] == 4 and count[9, 9] == 2 and count[9, 10] == 1
    torch.testing.assert_close(logits[0], expected_sum / expected_count, rtol=0, atol=1e-6)
    assert torch.equal(logits[1], torch.ones(10, 11))  # a constant stays itself under the averaging


def test_slide_keeps_positions_and_pads_small_images():
    from mim_hub.training.segmentation import slide_logits

    pixels = torch.arange(2 * 9 * 14, dtype=torch.float32).reshape(2, 9, 14)
    torch.testing.assert_close(slide_logits(_Identity(), pixels, 4, 2), pixels)  # every window agrees with the image
    model = _Identity()
    small = torch.rand(2, 5, 7) + 1
    out, count = slide_logits(model, small, crop_size=8, stride=4, return_count=True)
    (window,) = model.inputs
    assert window.shape == (1, 2, 8, 8) and torch.equal(window[0, :, :5, :7], small)
    assert (window[0, :, 5:] == 0).all() and (window[0, :, :, 7:] == 0).all()  # padded bottom / right with zeros
    assert out.shape == (2, 5, 7) and torch.equal(out, small) and (count == 1).all()  # the padding's logits dropped
    half = slide_logits(_Identity(half=True), torch.ones(1, 8, 8), crop_size=4, stride=4)  # coarse logits resized to the window
    torch.testing.assert_close(half, torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="larger than the crop"):
        slide_logits(_Identity(), pixels, 4, 5)


def _tiny_upernet(tmp_path, image_size=32):
    from mim_hub.training.segmentation import build_upernet

    config = mim_hub.MAEConfig(image_size=image_size, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                               intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                               decoder_intermediate_size=64)
    torch.manual_seed(0)
    mim_hub.MAEForPreTraining(config).save_pretrained(tmp_path / "mae")
    mim_hub.MAEImageProcessor(size={"height": image_size, "width": image_size},
                              crop_size={"height": image_size, "width": image_size}).save_pretrained(tmp_path / "mae")
    return build_upernet(str(tmp_path / "mae"), 11, channels=16, auxiliary_channels=8).eval()


def test_slide_with_one_window_the_image_size_equals_whole_image(tmp_path):
    from mim_hub.training.segmentation import SegmentationTorchData, evaluate_segmentation

    model = _tiny_upernet(tmp_path)
    with torch.no_grad():  # a trained-looking head: not every pixel the same class
        model.decode_head.classifier.weight.normal_(0, 3.0)
    source = DigitsSegmentation("test", size=6, canvas=32)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    whole = evaluate_segmentation(model, SegmentationTorchData(source, JointTransform(32, mean, std, train=False)), batch_size=4)
    slide = evaluate_segmentation(model, SegmentationTorchData(source, JointTransform(None, mean, std, train=False)), batch_size=4,
                                  mode="slide", crop_size=32, stride=21)
    assert slide == whole and 0 < whole["pixel_accuracy"] < 1
    # on the 64-px canvases: overlapping 32-px windows, scored at 64 px
    big = DigitsSegmentation("test", size=2)
    metrics = evaluate_segmentation(model, SegmentationTorchData(big, JointTransform(None, mean, std, train=False)), mode="slide")
    assert set(metrics) >= {"mean_iou", "pixel_accuracy", "per_class_iou"} and 0 <= metrics["mean_iou"] <= 1
    with pytest.raises(ValueError, match="mode"):
        evaluate_segmentation(model, SegmentationTorchData(big, JointTransform(None, mean, std, train=False)), mode="sliding")


@pytest.mark.slow
def test_finetune_semantic_segmentation_slide_eval_cli(tmp_path, capsys):
    config = mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                               decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                               decoder_intermediate_size=64)
    model_dir = tmp_path / "mae"
    mim_hub.MAEForPreTraining(config).save_pretrained(model_dir)
    mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(model_dir)
    data = _segfolder(tmp_path / "seg", size=40)  # 40-px images, 32-px windows
    out = tmp_path / "out"
    base = ["finetune", "--task", "semantic-segmentation", "--model", str(model_dir), "--dataset", f"segfolder:{data}", "--eval-split", "train",
            "--max-steps", "1", "--batch-size", "2", "--decoder-channels", "16", "--pictures", "1"]
    assert cli([*base, "--output-dir", str(out), "--eval-mode", "slide", "--eval-stride", "8"]) == 0
    metrics = json.load(open(out / "metrics.json"))
    assert 0 <= metrics["eval_mean_iou"] <= 1 and "eval_iou_left" in metrics
    assert "sliding window, crop 32, stride 8" in (out / "README.md").read_text()
    picture = Image.open(out / "segmentation.png").convert("L")
    assert picture.size == (3 * 3 * 40, 3 * 40 + 16)  # the picture at the image's own size, under a 16-px title band
    band = np.asarray(picture)[:16]
    for column in range(3):  # "input", "truth", "prediction": ink over every column
        assert (band[:, column * 120:(column + 1) * 120] < 128).any()
    assert cli([*base, "--output-dir", str(tmp_path / "bad"), "--eval-mode", "slide", "--eval-stride", "40"]) == 2
    assert "larger than" in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_slide_eval_runs_in_the_epoch_evaluations(tmp_path):
    from mim_hub.training.distributed import cpu_only
    from mim_hub.training.segmentation import finetune_segmentation

    config = mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                               decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                               decoder_intermediate_size=64)
    mim_hub.MAEForPreTraining(config).save_pretrained(tmp_path / "mae")
    mim_hub.MAEImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "mae")
    data = SegFolder(str(_segfolder(tmp_path / "seg", size=48)))
    trainer, metrics = finetune_segmentation(str(tmp_path / "mae"), data, data, output_dir=str(tmp_path / "out"), epochs=1, batch_size=2,
                                             channels=16, auxiliary_channels=8, pictures=0, log_to_console=False, eval_mode="slide",
                                             eval_crop_size=32, eval_stride=16)
    evaluations = [h for h in trainer.state.log_history if "eval_mean_iou" in h]
    assert len(evaluations) == 2 and evaluations[0]["epoch"] == 1  # the epoch's and the final one, both sliding-window
    assert metrics["eval_mean_iou"] == evaluations[-1]["eval_mean_iou"] and "eval_iou_right" in metrics
    # without an accelerator the arguments say so, as finetune's do: launched processes then join as gloo ranks
    assert trainer.args.use_cpu is cpu_only() and trainer.args.use_cpu == (not torch.cuda.is_available())
    with pytest.raises(ValueError, match="eval_mode"):
        finetune_segmentation(str(tmp_path / "mae"), data, data, output_dir=str(tmp_path / "bad"), eval_mode="tiles")
