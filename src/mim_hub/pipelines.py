"""`masked-image-reconstruction`: a transformers pipeline task of our own (registered on
`import mim_hub`): image in; the reconstruction picture, the reconstructed image and the loss on
the masked patches out. Works with every MAE-family pre-training model.

    from transformers import pipeline
    reconstructor = pipeline("masked-image-reconstruction", model="path/to/mae")
    out = reconstructor(image, mask_ratio=0.75, seed=0)
    out["picture"].save("reconstruction.png"); out["loss"]

Batches (`batch_size=N` on a list or dataset of images) give what one image at a time gives: each
image's mask is drawn from its own seed (`seed`, the same for every image of a call, or per image
as `{"image": image, "seed": k}`). A model saved with its code (`--with-code`) names this
pipeline in its config's `custom_pipelines`, so that `pipeline(model=folder,
trust_remote_code=True)` offers it where mim_hub is not installed.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForPreTraining, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .reconstruction import Reconstruction, compose_picture, reconstruct, to_image

TASK = "masked-image-reconstruction"


class MaskedImageReconstructionPipeline(Pipeline):
    """Returns, per image: `picture` (original | masked | reconstruction | reconstruction with the
    visible patches, a PIL image), `reconstruction` (PIL image, visible patches pasted back),
    `loss` (float, on the masked patches) and `mask` ([L] tensor, 1 = masked)."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    _FIELDS = ("original", "masked", "reconstruction", "pasted", "mask", "loss")  # batch-first tensors, `original` first

    def _sanitize_parameters(self, mask_ratio=None, seed=None, **kwargs):
        preprocess, forward = {}, {}
        if mask_ratio is not None:
            if not 0.0 <= float(mask_ratio) < 1.0:
                raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
            forward["mask_ratio"] = float(mask_ratio)
        if seed is not None:
            preprocess["seed"] = int(seed)
        return preprocess, forward, {}

    def preprocess(self, image, seed: int = 0):
        from transformers.image_utils import load_image

        if isinstance(image, dict):  # {"image": ..., "seed": k}: this image's own mask
            seed = int(image.get("seed", seed))
            image = image["image"]
        inputs = dict(self.image_processor(load_image(image), return_tensors="pt"))
        inputs["seed"] = torch.tensor([seed])  # travels with its image through batching
        return inputs

    def _forward(self, model_inputs, mask_ratio=None):
        seeds = [int(s) for s in model_inputs["seed"].reshape(-1)]
        result = reconstruct(self.model, model_inputs["pixel_values"].to(self.model.dtype), mask_ratio=mask_ratio, seed=seeds)
        # plain batch-first tensors, which transformers' batching splits back into images
        return {field: getattr(result, field) for field in self._FIELDS}

    def postprocess(self, model_outputs):
        result = Reconstruction(**{field: model_outputs[field] for field in self._FIELDS},
                                norm_pix_loss=bool(getattr(self.model.config, "norm_pix_loss", False)))
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


def custom_pipelines_entry(impl: str) -> dict:
    """The `custom_pipelines` entry of a config saved with its code: `impl` is the pipeline class
    as "module.Class" in the saved folder (transformers' format, see `Pipeline.save_pretrained`)."""
    return {TASK: {"impl": impl, "pt": ["AutoModelForPreTraining"], "tf": [], "type": "image"}}


__all__ = ["MaskedImageReconstructionPipeline", "register_pipelines"]
