"""The settings of each command, as typed dataclasses: built once from the command line (in
`mim_hub/commands/`), or directly from Python; the library below takes these or plain arguments.

Defaults are stated here once: `FinetuneSettings` serves classification and semantic-segmentation
fine-tuning alike (segmentation adds its own fields in `SegmentationSettings`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..data import ImageDataset, available_splits, evaluation_split, load_images


@dataclass(frozen=True)
class DataSettings:
    """Which images a run reads (`--dataset` and its options; see `mim_hub.data`)."""

    # the source and its splits
    dataset: str = "digits"
    dataset_config: str | None = None
    split: str = "train"
    eval_split: str | None = None
    # how it is read
    image_column: str | None = None
    label_column: str | None = None
    on_bad_image: str = "skip"
    # --streaming: iterated, not indexed
    streaming: bool = False
    shuffle_buffer: int = 10_000

    def images(self, split: str | None = None) -> ImageDataset:
        """The indexed dataset of `split` (default: the training split)."""
        return load_images(self.dataset, split=split or self.split, config=self.dataset_config, image_column=self.image_column,
                           label_column=self.label_column, on_bad_image=self.on_bad_image)

    def evaluation_split(self) -> str | None:
        """`--eval-split`, else 'test' or 'validation' when the dataset has one besides the training split."""
        available = None if self.eval_split else available_splits(self.dataset)
        return evaluation_split(self.split, self.eval_split, available)


@dataclass(frozen=True)
class CompileSettings:
    """`--compile`: torch.compile each block in place (parameter names unchanged)."""

    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str = "default"


@dataclass(frozen=True)
class PretrainSettings:
    """`mim-hub pretrain` (see `mim_hub/commands/pretrain.py` for each flag's meaning). The field
    names are the flags' names: a checkpoint's run record (`checkpointing.run_record`) is these
    settings, flattened."""

    # where to, from what
    output_dir: str
    model: str = "mae-tiny-digits"
    method: str | None = None
    data: DataSettings = DataSettings()
    # length and batch
    epochs: float | None = None
    max_steps: int | None = None
    batch_size: int = 64
    grad_accum: int = 1
    # optimiser and schedule (None: the method recipe's)
    base_lr: float | None = None
    lr: float | None = None
    weight_decay: float | None = None
    weight_decay_end: float | None = None
    optimizer: str | None = None
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    # numerics
    clip_grad: float | None = None
    mixed_precision: str = "no"
    # the model's options (None: the model's)
    mask_ratio: float | None = None
    norm_pix_loss: str | None = None  # "true" / "false"
    # inputs and augmentation
    normalization: str | None = None
    crop_min_scale: float | None = None
    no_flip: bool = False
    # sharding and weight average
    fsdp: bool = False
    model_ema: bool = False
    model_ema_decay: float = 0.9999
    # the run
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    # resume and checkpoints
    resume: bool = False
    resume_with_changes: bool = False
    save_every: int = 200
    keep_checkpoints: int = 2
    # after the run
    push_to_hub: str | None = None
    compile: CompileSettings = CompileSettings()
    method_options: dict = field(default_factory=dict)  # each method's own flags (commands/method_options.py), by name

    def flat(self) -> dict:
        """Every setting by its flag's name (data, compilation and the methods' options included)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("data", "compile", "method_options")}
        return {**dataclasses.asdict(self.data), **dataclasses.asdict(self.compile), **self.method_options, **values}


class MethodOptions:
    """A method's own options as attributes (what a recipe's `configure_model` / `recipe_options`
    read with `getattr(options, name, None)`); read-only."""

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("method options are read-only")


@dataclass(frozen=True)
class FinetuneSettings:
    """Fine-tuning (`mim-hub finetune`, `training.finetune.finetune`): the defaults of the
    classification recipe (MAE's, scaled down), shared by semantic segmentation
    (`SegmentationSettings`). A `--recipe` fills what the command line leaves unset
    (`mim_hub/commands/finetune.py`)."""

    # length and batch
    epochs: float = 10
    batch_size: int = 64
    grad_accum: int = 1
    # learning rate: `lr_rule` applied to `base_lr` and the effective batch, cosine to `min_lr`
    base_lr: float = 5e-4
    lr_rule: str = "blr/256"
    min_lr: float = 0.0
    warmup_ratio: float = 0.1
    warmup_epochs: float | None = None  # overrides warmup_ratio
    # regularisation
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    drop_path: float | None = None  # None: 0.1 where the method has stochastic depth (finetune_protocol)
    # augmentation
    flip: bool = True
    crop_min_scale: float = 0.08
    rand_augment: str | None = None
    reprob: float = 0.0
    remode: str = "pixel"
    # mixing (on when an alpha is > 0)
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    # the model: head input (None: mean where the method can choose; finetune_protocol), geometry, weight average
    pooling: str | None = None
    image_size: int | None = None
    window_size: int | None = None
    model_ema: bool = False
    model_ema_decay: float = 0.9999
    # model selection: a seeded, stratified share of the training split held out, the best epoch on it
    # kept (0: no selection, the last epoch); the evaluation split is read once, at the end
    validation_fraction: float = 0.0
    save_checkpoints: bool = True
    # the run
    seed: int = 0
    num_workers: int = 0
    log_to_console: bool = True
    resume_from_checkpoint: str | None = None
    # after it
    push_to_hub: str | None = None
    recipe: str | None = None  # the paper's recipe these settings follow (for the model card)
    fsdp: bool = False
    compile: CompileSettings = CompileSettings()

    @classmethod
    def of(cls, **options):
        """Settings from keyword options; `compile`, `compile_backend`, `compile_mode` may be given flat."""
        flat = {k: options.pop(k) for k in ("compile_backend", "compile_mode") if k in options}
        if isinstance(options.get("compile"), bool) or flat:
            options["compile"] = CompileSettings(bool(options.get("compile", False)), **flat)
        return cls(**options)


@dataclass(frozen=True)
class SegmentationSettings(FinetuneSettings):
    """Semantic segmentation (UperNet on the model's backbone): `FinetuneSettings`' defaults, and
    the MAE/BEiT UperNet recipe's own."""

    # what the UperNet recipe sets differently
    crop_min_scale: float = 0.25
    # its own
    lr: float = 1e-4  # the AdamW lr as it is (the recipe's; not base_lr scaled by the batch)
    schedule: str = "poly"  # or "cosine", after the linear warm-up
    jitter: float = 0.3
    channels: int = 512  # UperNet head width (mmseg: 512)
    auxiliary_channels: int | None = None  # default: half the head width
    from_scratch: bool = False
    max_steps: int = -1
    pictures: int = 4
    # evaluation: whole images resized, or each at its own resolution in sliding windows
    eval_mode: str = "whole"
    eval_crop_size: int | None = None
    eval_stride: int | None = None
