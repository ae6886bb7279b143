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
