"""MR-MAE's mimic objective: the loss on hand-checked tiny cases, grid alignment, tiny random CLIP /
ViT / DINOv2 teachers (saved to a temporary folder, no network), round trips and the command line."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2WithRegistersConfig, Dinov2WithRegistersModel, ViTConfig, ViTModel

from mim_hub import MRMAEConfig, MRMAEForPreTraining, MRMAEImageProcessor
from mim_hub.models.mr_mae.teachers import Teacher, align_grid, mimic_loss, normalize_target

from conftest import assert_close

TINY = dict(image_size=32, patch_size=8, conv_hidden_sizes=[8, 12], conv_depths=[1, 1], conv_patch_sizes=[2, 2],
            conv_intermediate_sizes=[16, 24], hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32)


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory):
    """A CLIP teacher on the student's 4x4 grid (patch 8) and a ViT on an 8x8 grid (patch 4)."""
    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            image_size=32, patch_size=8))
    vit = ViTModel(ViTConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                             patch_size=4), add_pooling_layer=False)
    clip.save_pretrained(root / "clip")
    vit.save_pretrained(root / "vit")
    return str(root / "clip"), str(root / "vit")


def test_mimic_loss_on_hand_checked_cases():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    target = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])
    assert mimic_loss(pred, target, "mse").item() == pytest.approx(3 / 4)  # (1 + 0 + 1 + 1) / 4
    assert mimic_loss(pred, target, "cosine").item() == pytest.approx(0.5)  # cos 1 and cos 0
    assert mimic_loss(pred, target, "smooth_l1").item() == pytest.approx((0.5 + 0 + 0.5 + 0.5) / 4)
    assert_close(normalize_target(torch.tensor([[1.0, 3.0]]), "layernorm"), torch.tensor([[-1.0, 1.0]]) / (1 + 1e-6) ** 0.5)
    assert_close(normalize_target(torch.tensor([[3.0, 4.0]]), "l2"), torch.tensor([[0.6, 0.8]]))
    with pytest.raises(ValueError, match="shape"):
        mimic_loss(pred, target[:, :1], "mse")


def test_teacher_grids_are_resampled_or_refused():
    features = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, one channel, row-major
    pooled = align_grid(features, (4, 4), (2, 2))
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert torch.equal(align_grid(features, (4, 4), (4, 4)), features)
    assert align_grid(torch.randn(2, 9, 5), (3, 3), (2, 2)).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="cannot be aligned with the student's 2x4 grid"):
        align_grid(features, (4, 4), (2, 4), "clip")


def test_teachers_add_their_terms_to_convmae_loss(teacher_dirs):
    clip_dir, vit_dir = teacher_dirs
    torch.manual_seed(0)
    model = MRMAEForPreTraining(MRMAEConfig(**TINY)).eval()
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        plain = model(pixels, noise=noise)
    model.set_teachers([clip_dir, vit_dir], weights=[1.0, 0.5])
    assert model.config.teacher_hidden_sizes == [16, 24] and len(model.mimic_heads) == 2
    with torch.no_grad():
        out = model(pixels, noise=noise)
    # the reconstruction is untouched; the terms are added with their weights
    assert_close(out.reconstruction_loss, plain.loss, "reconstruction")
    assert out.mimic_losses.shape == (2,)
    assert_close(out.mimic_loss, out.mimic_losses[0] + 0.5 * out.mimic_losses[1], "weights")
    assert_close(out.loss, plain.loss + out.mimic_loss, "total")
    # by hand: CLIP's preprocessing, its patch tokens, LayerNorm, visible tokens, head, MSE
    clip = CLIPVisionModel.from_pretrained(clip_dir).eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    clip_mean, clip_std = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1), torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        target = clip(pixel_values=((pixels * std + mean) - clip_mean) / clip_std).last_hidden_state[:, 1:]
        target = F.layer_norm(target, (16,), eps=1e-6)
        keep = torch.argsort(noise, dim=1)[:, :4]
        target = torch.gather(target, 1, keep.unsqueeze(-1).expand(-1, -1, 16))
        pred = model.mimic_heads[0](out.last_hidden_state)
    assert_close(out.mimic_losses[0], ((pred - target) ** 2).mean(), "clip term by hand")


def test_gradients_reach_the_student_not_the_teachers(teacher_dirs, tmp_path):
    torch.manual_seed(0)
    model = MRMAEForPreTraining(MRMAEConfig(**TINY, mimic_loss="cosine", mimic_head="mlp", teacher_layer=-1))
    model.set_teachers(list(teacher_dirs))
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mimic_heads.parameters())
    assert model.mr_mae.encoder.layers[0].attn.qkv_proj.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for t in model.teachers for p in t.model.parameters())
    assert not any("teacher" in name for name in model.state_dict())  # teachers are never saved with the student
    # round trip: heads and the teacher list come back; teachers are reloaded from their paths
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = MRMAEForPreTraining.from_pretrained(tmp_path).eval()
    assert loaded.config.teacher_names_or_paths == list(teacher_dirs) and loaded.config.mimic_head == "mlp"
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        # loaded for evaluation, the teachers are not needed: the loss is the reconstruction alone
        alone = loaded(pixels, noise=noise)
        assert alone.mimic_losses is None and torch.equal(alone.loss, alone.reconstruction_loss)
        assert len(loaded.teachers) == 2  # loads them from their paths
        a, b = model(pixels, noise=noise), loaded(pixels, noise=noise)
    assert_close(b.mimic_losses, a.mimic_losses, "mimic after reload")
    assert_close(b.loss, a.loss, "loss after reload")


def test_a_grid_that_cannot_be_aligned_is_refused(teacher_dirs):
    model = MRMAEForPreTraining(MRMAEConfig(**{**TINY, "image_size": [32, 64]}))
    model.set_teachers([teacher_dirs[0]])
    with pytest.raises(ValueError, match="cannot be aligned"):
        model(torch.randn(1, 3, 32, 64))


def test_registers_and_cls_are_dropped_from_a_dinov2_teacher():
    torch.manual_seed(0)
    dino = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                              num_attention_heads=2, image_size=32, patch_size=8, num_register_tokens=4))
    teacher = Teacher(dino)
    assert teacher.image_mean == [0.485, 0.456, 0.406] and teacher.grid == (4, 4)
    pixels = torch.randn(2, 3, 32, 32)
    features = teacher.features(pixels, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        full = dino(pixel_values=pixels).last_hidden_state
    assert features.shape == (2, 16, 16)
    assert_close(features, full[:, 5:], "patch tokens")  # cls + 4 registers dropped
    model = MRMAEForPreTraining(MRMAEConfig(**TINY))
    model.set_teachers([dino])
    assert model(pixels).mimic_losses.shape == (1,)
    # a dual encoder (CLIPModel) contributes its vision tower
    from transformers import CLIPConfig, CLIPModel

    clip = CLIPModel(CLIPConfig(text_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2),
                                vision_config=dict(hidden_size=12, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                                                   image_size=32, patch_size=8)))
    teacher = Teacher(clip)
    assert teacher.hidden_size == 12 and teacher.model is clip.vision_model and teacher.image_mean[0] == pytest.approx(0.48145466)
    assert teacher.features(pixels, [0.5] * 3, [0.5] * 3).shape == (2, 16, 12)


@pytest.mark.slow
def test_pretrain_command_with_teachers(teacher_dirs, tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    MRMAEForPreTraining(MRMAEConfig(**TINY, norm_pix_loss=True)).save_pretrained(folder)
    MRMAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mim_hub", "pretrain", "--method", "mr_mae", "--model", str(folder), "--output-dir", str(out),
           "--dataset", "digits", "--max-steps", "2", "--batch-size", "8", "--log-every", "1", "--save-every", "0",
           "--teacher", teacher_dirs[0], "--teacher", teacher_dirs[1], "--mimic-weight", "1", "--mimic-weight", "0.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["teacher_names_or_paths"] == list(teacher_dirs) and config["mimic_loss_weights"] == [1.0, 0.5]
    assert config["image_mean"] != [0.485, 0.456, 0.406]  # the run's (digits) normalisation was recorded for the teachers
    from argparse import Namespace

    from mim_hub.training.recipes import configure_model

    with pytest.raises(ValueError, match="--mimic-weight"):
        configure_model("mr_mae", MRMAEForPreTraining(MRMAEConfig(**TINY)), Namespace(teacher=list(teacher_dirs), mimic_weight=[1.0]))
