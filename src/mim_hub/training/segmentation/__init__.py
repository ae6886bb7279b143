"""Semantic segmentation: transformers' `UperNetForSemanticSegmentation` on a mim_hub backbone,
fine-tuned with `Trainer` (`mim-hub finetune --task semantic-segmentation`).

The recipe follows the MAE/BEiT ADE20K code (mmseg UperNet): AdamW, lr 1e-4, weight decay 0.05,
layer-wise lr decay 0.65 through the backbone (the decode heads and the feature pyramid at the
full lr), linear warm-up then poly decay (power 1), random resized crop + horizontal flip +
photometric jitter drawn once and applied to image and label map together (the label map with
nearest-neighbour resampling), ignore index 255. Plain ViTs feed four blocks (evenly spaced, the
last included: 4/6/8/12 of 12 as BEiT's 3, 5, 7, 11) through BEiT's x4/x2/x1/x0.5 pyramid; Swin
gives its stages; ConvMAE's hybrid its two convolution stages and the last block.

Evaluation (`eval_mode`) is whole-image at the model's input size (the label map resized with
nearest neighbour), or sliding-window as mmseg's `slide` mode: each image at its own resolution,
cut into `crop` x `crop` windows `stride` apart (the last row and column of windows flush with the
far edge), the windows' logits summed into the image's frame and divided by the number of windows
that cover each pixel; an image smaller than the crop is padded (bottom and right, with zeros after
normalisation, i.e. the mean colour) and the padding's logits dropped; scored against the label
map at full resolution. Both report mean IoU (over the classes present in prediction or ground
truth), per-class IoU and pixel accuracy, accumulated as a confusion matrix item by item, so
memory does not grow with the evaluation set. From Python:

    from mim_hub.training.segmentation import finetune_segmentation
    trainer, metrics = finetune_segmentation("my-mae", train, evaluation, output_dir="my-mae-seg")

The pieces: `data.py` (joint augmentation), `metrics.py` (IoU from a confusion matrix),
`sliding_window.py` (whole-image and sliding-window evaluation), `model.py` (UperNet on the
backbone, which reports its own stages; the layer-wise lr decay and poly schedule),
`pictures.py`, and `run.py` (the fine-tuning run, top to bottom).
"""

from .data import JointTransform, SegmentationTorchData
from .metrics import StreamingIoU, confusion_matrix, segmentation_metrics, trainer_metrics
from .model import build_upernet, param_groups_segmentation, poly_with_warmup, segmentation_processor, segmentation_stages
from .pictures import segmentation_picture
from .run import SegmentationTrainer, finetune_segmentation
from .sliding_window import EVAL_MODES, default_stride, evaluate_segmentation, slide_logits, window_starts

__all__ = ["finetune_segmentation", "build_upernet", "segmentation_metrics", "confusion_matrix", "StreamingIoU", "JointTransform",
           "SegmentationTorchData", "evaluate_segmentation", "segmentation_picture", "param_groups_segmentation", "poly_with_warmup",
           "segmentation_stages", "slide_logits", "window_starts", "EVAL_MODES", "SegmentationTrainer", "trainer_metrics",
           "default_stride", "segmentation_processor"]
