"""ONNX export (torch.onnx.export with dynamo=True and a dynamic batch): every method's base
model and classifier export, and onnxruntime gives their outputs to 1e-4 at another batch size."""

import warnings

import pytest
import torch

from mim_hub.auto import method_classes
from tiny_models import TINY, method_of, tiny

onnxruntime = pytest.importorskip("onnxruntime")  # the `test` extra installs it


class BaseAndClassifier(torch.nn.Module):
    """A method's base model and classifier side by side: one export covers both classes."""

    def __init__(self, base, classifier):
        super().__init__()
        self.base, self.classifier = base, classifier

    def forward(self, pixel_values):
        encoded = self.base(pixel_values)
        return encoded.last_hidden_state, encoded.pooler_output, self.classifier(pixel_values).logits


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(TINY))
def test_base_model_and_classifier_export_with_a_dynamic_batch(method, tmp_path):
    config, _ = tiny(method)
    torch.manual_seed(0)
    classes = method_classes(method_of(method))
    model = BaseAndClassifier(classes["model"](config), classes["classification"](config)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on torchvision ops it skips
        program = torch.onnx.export(model, (torch.randn(2, config.num_channels, 32, 32),), dynamo=True, input_names=["pixel_values"],
                                    output_names=["last_hidden_state", "pooler_output", "logits"],
                                    dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}}, verbose=False)
    program.save(str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, config.num_channels, 32, 32)  # not the batch it was exported with
    got = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert len(got) == 3
    for name, ours, reference in zip(("last_hidden_state", "pooler_output", "logits"), got, expected):
        assert ours.shape == tuple(reference.shape), name
        torch.testing.assert_close(torch.from_numpy(ours), reference, rtol=1e-4, atol=1e-4, msg=name)


class CAEPreTrainingOutputs(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, bool_masked_pos, labels):
        out = self.model(pixel_values, bool_masked_pos=bool_masked_pos, labels=labels)
        return out.loss, out.logits, out.latent_predict


@pytest.mark.slow
def test_cae_pre_training_exports(tmp_path):
    """CAE's mask split is a cumsum and a scatter (no stable sort): the pre-training model exports,
    and onnxruntime gives its outputs for another mask with the config's count."""
    config, extra = tiny("cae")
    torch.manual_seed(0)
    model = CAEPreTrainingOutputs(method_classes("cae")["pretraining"](config)).eval()
    x = torch.randn(2, config.num_channels, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x, extra["bool_masked_pos"], extra["labels"]), dynamo=True,
                                    input_names=["pixel_values", "bool_masked_pos", "labels"], verbose=False)
    program.save(str(tmp_path / "cae.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "cae.onnx"), providers=["CPUExecutionProvider"])
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, torch.randperm(64)[:24]] = mask[1, torch.randperm(64)[:24]] = True
    labels = torch.randint(0, config.vocab_size, (48,))
    got = session.run(None, {"pixel_values": x.numpy(), "bool_masked_pos": mask.numpy(), "labels": labels.numpy()})
    with torch.no_grad():
        expected = model(x, mask, labels)
    for name, ours, reference in zip(("loss", "logits", "latent_predict"), got, expected):
        torch.testing.assert_close(torch.from_numpy(ours), reference, rtol=1e-4, atol=1e-4, msg=name)
