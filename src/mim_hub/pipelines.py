"""`masked-image-reconstruction`: a transformers pipeline task of our own (registered on
`import mim_hub`): image in; the reconstruction picture, the reconstructed image and the loss on
the masked patches out. Works with every MAE-family pre-training model.

    from transformers import pipeline
    reconstructor = pipeline("masked-image-reconstruction", model="path/to/mae")
    out = reconstructor(image, mask_ratio=0.75, seed=0)
    out["picture"].save("reconstruction.png"); out["loss"]
"""

from __future__ import annotations

from transformers import AutoModelForPreTraining, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .reconstruction import compose_picture, reconstruct, to_image

TASK = "masked-image-reconstruction"


class MaskedImageReconstructionPipeline(Pipeline):
    """Returns, per image: `picture` (original | masked | reconstruction | reconstruction with the
    visible patches, a PIL image), `reconstruction` (PIL image, visible patches pasted back),
    `loss` (float, on the masked patches) and `mask` ([L] tensor, 1 = masked)."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, mask_ratio=None, seed=None, **kwargs):
        forward = {}
        if mask_ratio is not None:
            if not 0.0 <= float(mask_ratio) < 1.0:
                raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
            forward["mask_ratio"] = float(mask_ratio)
        if seed is not None:
            forward["seed"] = int(seed)
        return {}, forward, {}

    def preprocess(self, image):
        from transformers.image_utils import load_image

        return self.image_processor(load_image(image), return_tensors="pt")

    def _forward(self, model_inputs, mask_ratio=None, seed=0):
        result = reconstruct(self.model, model_inputs["pixel_values"].to(self.model.dtype), mask_ratio=mask_ratio, seed=seed)
        return {"result": result}

    def postprocess(self, model_outputs):
        result = model_outputs["result"]
        mean, std = self.image_processor.image_mean, self.image_processor.image_std
        return {
            "picture": compose_picture(result, 0, mean, std),
            "reconstruction": to_image(result.pasted[0], mean, std),
            "loss": float(result.loss[0]),
            "mask": result.mask[0].detach().cpu(),
        }


def register_pipelines() -> None:
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MaskedImageReconstructionPipeline, pt_model=AutoModelForPreTraining, type="image")


__all__ = ["MaskedImageReconstructionPipeline", "register_pipelines"]
