"""`mim-hub finetune`: fine-tune a saved model, as a classifier (`--task image-classification`,
transformers' Trainer, `mim_hub.training.finetune`) or as UperNet for semantic segmentation
(`--task semantic-segmentation`, `mim_hub.training.segmentation`)."""

from __future__ import annotations

import argparse
import logging
import os

from .arguments import add_compile_arguments, add_data_arguments, data_settings, default_num_workers

logger = logging.getLogger("mim_hub.finetune")
EVAL_MODES = ("whole", "slide")  # as training/segmentation.py's (which imports torch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=("image-classification", "semantic-segmentation"), default="image-classification",
                        help="image-classification (the method's classifier) or semantic-segmentation (UperNet on the "
                             "model's backbone; see training/segmentation.py)")
    parser.add_argument("--model", required=True, help="saved model folder (a pre-trained or converted mim_hub model)")
    parser.add_argument("--output-dir", required=True, help="where checkpoints and the fine-tuned model go")
    add_data_arguments(parser, streaming=False)
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help="a paper's fine-tuning recipe (mim-hub zoo lists them, with sources): its values fill every flag not given")
    parser.add_argument("--epochs", type=float, default=None, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per device per step (default 64)")
    parser.add_argument("--grad-accum", type=int, default=None,
                        help="gradient accumulation steps (default 1; with --recipe: enough to reach the recipe's effective batch)")
    parser.add_argument("--base-lr", type=float, default=None,
                        help="base lr, scaled by the effective batch as the recipe's original does (default: lr = base_lr x batch / 256, 5e-4)")
    parser.add_argument("--min-lr", type=float, default=None, help="lr at the end of the cosine schedule (default 0)")
    parser.add_argument("--layer-decay", type=float, default=None, help="layer-wise lr decay (MAE: 0.65 ViT-B, 0.75 ViT-L/H; default 0.65)")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0.05)")
    parser.add_argument("--label-smoothing", type=float, default=None, help="label smoothing factor (default 0.1; folded into MixUp targets)")
    parser.add_argument("--drop-path", type=float, default=None,
                        help="stochastic depth rate (default 0.1; refused for a method without stochastic depth, e.g. CRATE-MAE)")
    parser.add_argument("--warmup-ratio", type=float, default=None, help="fraction of steps for linear warm-up (default 0.1)")
    parser.add_argument("--warmup-epochs", type=float, default=None, help="epochs of linear warm-up (overrides --warmup-ratio)")
    parser.add_argument("--crop-min-scale", type=float, default=None, help="RandomResizedCrop's smallest area fraction (default 0.08)")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument("--rand-augment", default=None, metavar="CONFIG",
                        help="timm RandAugment config, e.g. rand-m9-mstd0.5-inc1; 'none' for none (default none)")
    parser.add_argument("--reprob", type=float, default=None, help="random erasing probability (default 0)")
    parser.add_argument("--remode", choices=("pixel", "rand", "const"), default=None, help="random erasing fill (default pixel)")
    parser.add_argument("--mixup", type=float, default=None, help="MixUp alpha, on if > 0 (default 0)")
    parser.add_argument("--cutmix", type=float, default=None, help="CutMix alpha, on if > 0 (default 0)")
    parser.add_argument("--mixup-prob", type=float, default=None, help="probability of mixing a batch (default 1)")
    parser.add_argument("--mixup-switch-prob", type=float, default=None, help="probability of CutMix when both are on (default 0.5)")
    parser.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=None, help="keep an EMA of the weights (timm ModelEmaV2)")
    parser.add_argument("--model-ema-decay", type=float, default=None, help="EMA decay (default 0.9999)")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (GPUs; see docs/training.md for the accelerate config)")
    parser.add_argument("--resume-from-checkpoint", default=None, metavar="DIR", help="resume from a checkpoint-N folder of --output-dir")
    parser.add_argument("--image-size", type=int, default=None,
                        help="fine-tune at this resolution (default: the model's); position tables are resized, as SimMIM/MAE do")
    parser.add_argument("--window-size", type=int, default=None, help="Swin: fine-tune with this attention window (SimMIM: 6 -> 7 at 224 px)")
    parser.add_argument("--pooling", choices=("mean", "cls"), default=None,
                        help="classifier head input: mean of patch tokens (MAE recipe, the default) or the cls token (refused "
                             "for a model without one); reaches every method's config (use_mean_pooling, or CRATE's pooling)")
    parser.add_argument("--validation-fraction", type=float, default=0.0,
                        help="hold out this fraction of the training split (stratified, seeded by --seed) and keep the best "
                             "epoch on it (default 0: no selection, the last epoch is kept); the evaluation split never selects")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--num-workers", type=int, default=default_num_workers(),
                        help="data loader worker processes (default: the CPUs less one, at most 8)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the fine-tuned model to this Hub repo")
    add_segmentation_arguments(parser)
    add_compile_arguments(parser)


def add_segmentation_arguments(parser) -> None:
    """The options of `mim-hub finetune --task semantic-segmentation` (beside finetune's own)."""
    group = parser.add_argument_group("semantic segmentation (--task semantic-segmentation)")
    group.add_argument("--lr", type=float, default=None, help="AdamW learning rate (MAE/BEiT UperNet recipe: 1e-4)")
    group.add_argument("--schedule", choices=("poly", "cosine"), default=None, help="lr schedule after the linear warm-up (default poly)")
    group.add_argument("--decoder-channels", type=int, default=None, help="UperNet head width (mmseg: 512)")
    group.add_argument("--jitter", type=float, default=None, help="photometric jitter strength (brightness, contrast, saturation; default 0.3)")
    group.add_argument("--reduce-labels", action="store_true", help="label 0 -> ignored (255), c -> c - 1 (ADE20K / scene_parse_150)")
    group.add_argument("--from-scratch", action="store_true", help="the same UperNet with a randomly initialised backbone (a baseline)")
    group.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs; default: none)")
    group.add_argument("--pictures", type=int, default=None, help="evaluation items drawn into OUTPUT_DIR/segmentation.png (default 4; 0: none)")
    group.add_argument("--eval-mode", choices=EVAL_MODES, default=None,
                       help="whole: each evaluation image resized to the input size; slide: each at its own resolution in "
                            "overlapping windows whose logits are averaged (mmseg's slide mode); default whole")
    group.add_argument("--eval-crop-size", type=int, default=None, metavar="PX",
                       help="--eval-mode slide: window side in pixels (default: the fine-tuning --image-size)")
    group.add_argument("--eval-stride", type=int, default=None, metavar="PX",
                       help="--eval-mode slide: pixels between window starts, at most the crop (default: 2/3 of the crop, as mmseg's 512/341)")


# the flags a --recipe fills when not given (FinetuneSettings' fields of the same names; without
# a recipe they take FinetuneSettings' defaults: the help texts above quote them)
RECIPE_FILLED = ("epochs", "batch_size", "base_lr", "min_lr", "layer_decay", "weight_decay", "label_smoothing", "drop_path",
                 "warmup_ratio", "warmup_epochs", "crop_min_scale", "pooling", "image_size", "window_size", "rand_augment", "reprob",
                 "remode", "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "model_ema", "model_ema_decay", "grad_accum")
# recipe field -> finetune() keyword where the names differ
RECIPE_KEYS = {"per_device_batch": "batch_size"}


def resolve_settings(args: argparse.Namespace) -> dict:
    """finetune() keywords from the flags: a flag given wins, then the recipe's value, then the
    default. With a recipe and no --grad-accum, the accumulation reaches the recipe's effective batch."""
    from ..training.finetune_recipes import get_recipe  # (the command's imports, when it runs)
    from ..training.settings import FinetuneSettings

    recipe = get_recipe(args.recipe) if args.recipe else None
    from_recipe = {RECIPE_KEYS.get(k, k): v.value for k, v in recipe.values.items()} if recipe else {}
    defaults, settings = FinetuneSettings(), {}
    for key in RECIPE_FILLED:
        given = getattr(args, key, None)
        settings[key] = given if given is not None else from_recipe.get(key, getattr(defaults, key))
    settings["lr_rule"] = from_recipe.get("lr_rule", defaults.lr_rule)
    if recipe is not None and args.grad_accum is None and "effective_batch" in from_recipe:
        from accelerate import PartialState

        from ..training.distributed import cpu_only

        per_step = settings["batch_size"] * PartialState(cpu=cpu_only()).num_processes
        settings["grad_accum"] = max(1, int(round(from_recipe["effective_batch"] / per_step)))
    if recipe is not None:
        settings["recipe"] = recipe.name
    return settings


def main(args: argparse.Namespace) -> int:
    if args.task == "semantic-segmentation":
        return segmentation_main(args)
    settings = resolve_settings(args)  # an unknown recipe fails here, before any data is read
    if args.recipe:
        from ..training.finetune_recipes import get_recipe
        from ..training.modelio import method_of_folder

        method = method_of_folder(args.model)

        if get_recipe(args.recipe).method != method:
            logger.warning("recipe %s is %s's; %s is a %s model", args.recipe, get_recipe(args.recipe).method, args.model, method)
    from ..data import count_bad_images
    from ..training.finetune import finetune

    data = data_settings(args)
    train = data.images()
    eval_split = data.evaluation_split()
    evaluation = data.images(eval_split) if eval_split else None
    bad_image_log = os.path.join(args.output_dir, "bad_images.tsv")  # as every command writes it (data.bad_image)
    for images in (train, evaluation):
        if images is not None:
            images.bad_image_log = bad_image_log
    _, metrics = finetune(args.model, train, evaluation, output_dir=args.output_dir, flip=not args.no_flip, seed=args.seed,
                          num_workers=args.num_workers, push_to_hub=args.push_to_hub,
                          resume_from_checkpoint=args.resume_from_checkpoint, fsdp=args.fsdp,
                          compile=args.compile, compile_backend=args.compile_backend, compile_mode=args.compile_mode,
                          validation_fraction=args.validation_fraction, **settings)
    if count_bad_images(bad_image_log):
        print(f"{count_bad_images(bad_image_log)} unreadable images skipped (listed in {bad_image_log})")
    print(f"lr used: {metrics['learning_rate']:.3g} ({settings.get('lr_rule', 'blr/256')} of base lr {settings.get('base_lr', 5e-4):g}, "
          f"effective batch {metrics['effective_batch']})")
    if "validation_accuracy" in metrics:
        print(f"validation accuracy (the kept epoch): {100 * metrics['validation_accuracy']:.2f}%")
    if "eval_accuracy" in metrics:
        print(f"eval accuracy: {100 * metrics['eval_accuracy']:.2f}%")
        if "eval_ema_accuracy" in metrics:
            print(f"eval accuracy (EMA): {100 * metrics['eval_ema_accuracy']:.2f}%")
    return 0


def segmentation_main(args) -> int:
    """`mim-hub finetune --task semantic-segmentation`."""
    from ..data import load_segmentation
    from ..training.segmentation import finetune_segmentation
    from ..training.settings import SegmentationSettings

    common = dict(image_column=args.image_column, label_column=args.label_column, reduce_labels=args.reduce_labels, seed=args.seed,
                  config=args.dataset_config)
    train = load_segmentation(args.dataset, split=args.split, **common)
    eval_split = args.eval_split or ("test" if args.dataset == "digits-seg" else None)
    evaluation = load_segmentation(args.dataset, split=eval_split, **common) if eval_split else None
    if evaluation is not None and evaluation.num_labels != train.num_labels:
        evaluation.label_names = train.label_names
    # every flag left unset (None) takes SegmentationSettings' default
    names = ("epochs", "batch_size", "layer_decay", "weight_decay", "warmup_ratio", "drop_path", "lr", "schedule", "jitter",
             "image_size", "from_scratch", "seed", "num_workers", "max_steps", "pictures", "eval_mode", "eval_crop_size", "eval_stride")
    given = {key: getattr(args, key) for key in names if getattr(args, key) is not None}
    if args.decoder_channels is not None:
        given["channels"] = args.decoder_channels
    settings = SegmentationSettings(**given, flip=not args.no_flip)
    _, metrics = finetune_segmentation(args.model, train, evaluation, output_dir=args.output_dir, settings=settings)
    if metrics:
        print(f"eval mIoU: {100 * metrics['eval_mean_iou']:.2f}%  pixel accuracy: {100 * metrics['eval_pixel_accuracy']:.2f}%")
    print(f"saved to {args.output_dir}")
    return 0
