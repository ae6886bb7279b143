"""The Hub and the ecosystem: pipelines, model cards, push_to_hub up to the network boundary,
remote code, the zoo catalogue."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from PIL import Image
from transformers import pipeline

from mim_hub import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEImageProcessor
from mim_hub.conversion import convert
from mim_hub.hub import write_model_card
from mim_hub.hub.push import push_folder
from mim_hub.hub.remote_code import save_with_code

from conftest import load_fixture
from tiny_models import TINY as TINY_MODELS

TINY = dict(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=64)


def _image(seed=0, size=(40, 50)):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (*size, 3), dtype=np.uint8))


@pytest.fixture
def classifier_dir(tmp_path):
    config = MAEConfig(**TINY, num_labels=3, use_mean_pooling=True, id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
    model = MAEForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    MAEImageProcessor.for_image_size(32).save_pretrained(tmp_path)
    write_model_card(str(tmp_path), model, method="mae", provenance="random init, for tests")
    return tmp_path


def test_feature_extraction_pipeline_pools_like_the_model(classifier_dir):
    extractor = pipeline("image-feature-extraction", model=str(classifier_dir))
    image = _image()
    tokens = np.array(extractor(image))
    pooled = np.array(extractor(image, pool=True))
    assert tokens.shape == (1, 65, 64) and pooled.shape == (1, 64)
    model = extractor.model
    pixels = extractor.image_processor(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = model(pixels).pooler_output
    np.testing.assert_allclose(pooled, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_classification_pipeline_uses_labels(classifier_dir):
    predictions = pipeline("image-classification", model=str(classifier_dir))(_image(), top_k=3)
    assert sorted(p["label"] for p in predictions) == ["cat", "dog", "fox"]
    assert abs(sum(p["score"] for p in predictions) - 1) < 1e-5


def test_model_card_metadata_validates(classifier_dir):
    card = ModelCard.load(classifier_dir / "README.md")
    card.validate = None  # validation is a network call; check the metadata itself
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert "mim_hub" in data["tags"] and "mae" in data["tags"]
    assert data["license"] == "cc-by-nc-4.0"
    assert "facebookresearch/mae" in card.text and "@inproceedings{he2022masked" in card.text


def test_model_card_with_metrics_has_model_index(tmp_path):
    model = MAEForImageClassification(MAEConfig(**TINY, num_labels=2))
    path = write_model_card(str(tmp_path), model, method="mae", provenance="test", datasets=["digits"],
                            metrics=[{"dataset": "digits", "type": "accuracy", "value": 0.97, "name": "top-1"}], base_model="org/base")
    data = ModelCard.load(path).data.to_dict()
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.97
    assert data["datasets"] == ["digits"] and data["base_model"] == "org/base"


def test_push_sends_every_file_in_one_commit(classifier_dir, monkeypatch):
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("repo", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, **kw: calls.setdefault("commit", kw))
    push_folder(str(classifier_dir), "someone/mae-tiny", commit_message="Upload")
    assert calls["repo"][0] == "someone/mae-tiny"
    commit = calls["commit"]
    assert commit["repo_id"] == "someone/mae-tiny" and commit["commit_message"] == "Upload"
    assert all(isinstance(op, CommitOperationAdd) for op in commit["operations"])
    assert sorted(op.path_in_repo for op in commit["operations"]) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]


def test_push_refuses_an_incomplete_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        push_folder(str(tmp_path), "someone/x", api=object())


def test_convert_push_to_hub(tmp_path, monkeypatch):
    sent = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "create_commit", lambda self, **kw: sent.update(kw))
    path, _, _, meta = load_fixture("mae", "finetune-classifier")
    convert("mae", path, str(tmp_path / "out"), config=meta["bars_overrides"], push_to_hub="me/mae-ft")
    assert sent["repo_id"] == "me/mae-ft"
    assert {op.path_in_repo for op in sent["operations"]} == {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"}


def test_model_push_to_hub_is_the_transformers_one():
    assert MAEForPreTraining.push_to_hub.__qualname__.startswith("PushToHubMixin")


REMOTE_CHECK = textwrap.dedent(
    """
    import sys, torch
    sys.path = [p for p in sys.path if not p.endswith("/src") and "__editable__" not in p]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower() and "editable" not in repr(f).lower()]
    try:
        import mim_hub
        raise SystemExit("mim_hub is importable: the check would prove nothing")
    except ImportError:
        pass
    from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining
    folder, expected = sys.argv[1], torch.load(sys.argv[2])
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    pre = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        out = model(torch.ones(1, 3, 32, 32)).last_hidden_state
    assert torch.allclose(out, expected, atol=1e-6), (out - expected).abs().max()
    print("OK", type(model).__name__, type(pre).__name__, type(processor).__name__)
    """
)


@pytest.mark.slow
def test_remote_code_loads_without_mim_hub(tmp_path):
    model = MAEForPreTraining(MAEConfig(**TINY)).eval()
    folder = tmp_path / "with_code"
    save_with_code(model, MAEImageProcessor.for_image_size(32), str(folder))
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"].endswith(".MAEModel")
    with torch.no_grad():
        torch.save(model.mae(torch.ones(1, 3, 32, 32)).last_hidden_state, tmp_path / "expected.pt")
    script = tmp_path / "check.py"
    script.write_text(REMOTE_CHECK)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "expected.pt")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK MAEModel MAEForPreTraining MAEImageProcessor" in proc.stdout


def test_zoo_lists_every_method():
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "zoo", "--format", "json"], capture_output=True, text=True, check=True)
    rows = {row["method"]: row for row in json.loads(proc.stdout)}
    from mim_hub.models.catalogue import METHODS

    assert set(rows) == set(METHODS) and {"hpm", "spark"} <= set(rows)
    assert any(r["file"] == "mae_visualize_vit_large.pth" for r in rows["mae"]["releases"])


def test_masked_image_reconstruction_pipeline(tmp_path):
    torch.manual_seed(0)
    model = MAEForPreTraining(MAEConfig(**TINY, norm_pix_loss=True)).eval()
    model.save_pretrained(tmp_path)
    MAEImageProcessor.for_image_size(32).save_pretrained(tmp_path)
    reconstructor = pipeline("masked-image-reconstruction", model=str(tmp_path))
    image = _image(3, (60, 70))
    out = reconstructor(image, mask_ratio=0.5, seed=1)
    assert out["picture"].width > 4 * 32 and out["reconstruction"].size == (32, 32)
    assert int(out["mask"].sum()) == 32 and out["loss"] > 0
    again = reconstructor(image, mask_ratio=0.5, seed=1)
    assert again["loss"] == out["loss"] and torch.equal(again["mask"], out["mask"])
    other = reconstructor(image, mask_ratio=0.75, seed=2)
    assert int(other["mask"].sum()) == 48
    # the loss equals the model's own on the same masking noise
    pixels = reconstructor.image_processor(image, return_tensors="pt").pixel_values
    noise = torch.rand(1, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert abs(model(pixels, noise=noise, mask_ratio=0.5).loss.item() - out["loss"]) < 1e-5
    with pytest.raises(ValueError, match="mask_ratio"):
        reconstructor(image, mask_ratio=1.5)


PIXEL_RECONSTRUCTING = {"mae", "color_mae", "crate_mae", "mr_mae", "simmim", "simmim_swin", "hpm"}


@pytest.mark.parametrize("method", sorted(TINY_MODELS))
def test_pipelines_and_remote_code_for_every_method(method, tmp_path):
    from tiny_models import method_of, tiny

    from mim_hub.auto import method_classes

    config, _ = tiny(method)
    classes = method_classes(method_of(method))
    folder = tmp_path / method
    model = classes["classification"](config).eval()
    processor = classes["image_processor"](size={"height": 32, "width": 32}, do_center_crop=False)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    image = _image(1)
    pooled = np.array(pipeline("image-feature-extraction", model=str(folder))(image, pool=True))
    assert pooled.shape == (1, config.hidden_size)
    assert len(pipeline("image-classification", model=str(folder))(image, top_k=3)) == 3
    pre = classes["pretraining"](config).eval()
    pre_dir = tmp_path / f"{method}-pre"
    pre.save_pretrained(pre_dir)
    processor.save_pretrained(pre_dir)
    if method in PIXEL_RECONSTRUCTING:
        out = pipeline("masked-image-reconstruction", model=str(pre_dir))(image, seed=0)
        assert out["loss"] > 0 and out["picture"].width > 128
    else:  # CAE predicts token ids, not pixels: a clear refusal
        with pytest.raises((ValueError, TypeError), match="(?i)pixel|reconstruct"):
            pipeline("masked-image-reconstruction", model=str(pre_dir))(image, seed=0)
    code_dir = tmp_path / f"{method}-code"
    save_with_code(model, processor, str(code_dir))
    assert json.loads((code_dir / "config.json").read_text())["auto_map"]["AutoModelForImageClassification"].endswith(type(model).__name__)
