"""Named fine-tuning recipes: `mim-hub finetune --recipe NAME`, one per released fine-tuned model.

Each value carries its source: the original repository's file and the line it is set on (quoted,
so that it can be found again), or the paper. A value that could not be checked against its
source says `verified=False`. Flags given on the command line override recipe values; values a
recipe does not set fall back to `finetune()`'s defaults.

The learning rate is scaled as the original scales it (`lr_rule`):
- `"blr/256"` (MAE, ConvMAE): lr = base_lr x effective batch / 256;
- `"blr/512"` (SimMIM, Swin's code base): lr = base_lr x effective batch / 512;
- `"absolute"` (CAE, BEiT's code base; CRATE): lr is used as given, whatever the batch.
The effective batch is per-device batch x gradient accumulation x processes. When only the
per-device batch is given, the accumulation is chosen to reach the recipe's effective batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAE = "facebookresearch/mae"
MAE_FT = f"{MAE} FINETUNE.md"
MAE_ARGS = f"{MAE} main_finetune.py"
SIMMIM = "microsoft/SimMIM"
CAE = "lxtGH/CAE (PaddlePaddle/VIMER CAE, PyTorch port)"
CONVMAE = "Alpha-VL/ConvMAE FINETUNE.md"
CRATE = "Ma-Lab-Berkeley/CRATE"
HPM = "Haochen-Wang409/HPM"
SPARK = "keyu-tian/SparK"


@dataclass(frozen=True)
class V:
    """A recipe value and where it comes from."""

    value: object
    source: str
    verified: bool = True


# the names finetune() takes, in the order `mim-hub zoo` prints them
FIELDS = ("epochs", "effective_batch", "per_device_batch", "base_lr", "lr_rule", "min_lr", "warmup_epochs", "layer_decay",
          "weight_decay", "drop_path", "label_smoothing", "rand_augment", "reprob", "remode", "mixup", "cutmix", "mixup_prob",
          "mixup_switch_prob", "crop_min_scale", "pooling", "image_size", "window_size", "model_ema", "model_ema_decay")


@dataclass(frozen=True)
class FinetuneRecipe:
    name: str
    method: str
    release: str  # the fine-tuned checkpoint this recipe produced, and its reported accuracy
    values: dict[str, V] = field(default_factory=dict)
    note: str = ""

    def get(self, key: str, default=None):
        return self.values[key].value if key in self.values else default

    def rows(self) -> list[tuple[str, object, str, bool]]:
        return [(k, self.values[k].value, self.values[k].source, self.values[k].verified) for k in FIELDS if k in self.values]


def _mae_common(line_of: dict[str, str]) -> dict[str, V]:
    """main_finetune.py's defaults that FINETUNE.md's commands leave as they are."""
    return {
        "lr_rule": V("blr/256", f"{MAE_FT}: '`lr` = `blr` * effective batch size / 256'"),
        "min_lr": V(1e-6, f"{MAE_ARGS}: \"parser.add_argument('--min_lr', type=float, default=1e-6\""),
        "warmup_epochs": V(5, f"{MAE_ARGS}: \"parser.add_argument('--warmup_epochs', type=int, default=5\""),
        "weight_decay": V(0.05, line_of["cmd"] + " '--weight_decay 0.05'"),
        "label_smoothing": V(0.1, f"{MAE_ARGS}: \"parser.add_argument('--smoothing', type=float, default=0.1\""),
        "rand_augment": V("rand-m9-mstd0.5-inc1", f"{MAE_ARGS}: \"parser.add_argument('--aa', type=str, default='rand-m9-mstd0.5-inc1'\""),
        "reprob": V(0.25, line_of["cmd"] + " '--reprob 0.25'"),
        "remode": V("pixel", f"{MAE_ARGS}: \"parser.add_argument('--remode', type=str, default='pixel'\""),
        "mixup": V(0.8, line_of["cmd"] + " '--mixup 0.8'"),
        "cutmix": V(1.0, line_of["cmd"] + " '--cutmix 1.0'"),
        "mixup_prob": V(1.0, f"{MAE_ARGS}: \"parser.add_argument('--mixup_prob', type=float, default=1.0\""),
        "mixup_switch_prob": V(0.5, f"{MAE_ARGS}: \"parser.add_argument('--mixup_switch_prob', type=float, default=0.5\""),
        "crop_min_scale": V(0.08, f"{MAE} util/datasets.py build_transform -> timm create_transform (scale default (0.08, 1.0))", False),
        "pooling": V("mean", f"{MAE_FT}: 'In this repo, we use `--global_pool` for fine-tuning'"),
        "model_ema": V(False, f"{MAE_ARGS}: no EMA option (not used)"),
    }


def _mae(name, model, cmd_where, batch, nodes, epochs, blr, layer_decay, drop_path, release) -> FinetuneRecipe:
    cmd = f"{MAE_FT}, {cmd_where} (submitit_finetune.py --model {model}):"
    values = _mae_common({"cmd": cmd})
    values.update({
        "epochs": V(epochs, f"{cmd} '--epochs {epochs}'"),
        "per_device_batch": V(batch, f"{cmd} '--batch_size {batch}'"),
        "effective_batch": V(batch * nodes * 8, f"{cmd} '--nodes {nodes}' x 8 GPUs x '--batch_size {batch}'"
                             + (" ('the effective batch size is 32 (`batch_size` per gpu) * 4 (`nodes`) * 8 (gpus per node) = 1024')" if batch == 32 else "")),
        "base_lr": V(blr, f"{cmd} '--blr {blr:g}'"),
        "layer_decay": V(layer_decay, f"{cmd} '--layer_decay {layer_decay}'"),
        "drop_path": V(drop_path, f"{cmd} '--drop_path {drop_path}'"),
    })
    return FinetuneRecipe(name, "mae", release, values)


def _simmim(name, config_file, backbone_lines: dict[str, V], release, verified_release=False) -> FinetuneRecipe:
    cfg = f"{SIMMIM} {config_file}:"
    defaults = f"{SIMMIM} config.py:"
    values = {
        "epochs": V(100, f"{cfg} 'EPOCHS: 100'"),
        "warmup_epochs": V(20, f"{cfg} 'WARMUP_EPOCHS: 20'"),
        "base_lr": V(1.25e-3, f"{cfg} 'BASE_LR: 1.25e-3'"),
        "min_lr": V(2.5e-7, f"{cfg} 'MIN_LR: 2.5e-7' (SimMIM scales it with the batch like the lr)"),
        "weight_decay": V(0.05, f"{cfg} 'WEIGHT_DECAY: 0.05'"),
        "drop_path": V(0.1, f"{cfg} 'DROP_PATH_RATE: 0.1'"),
        "lr_rule": V("blr/512", f"{SIMMIM} main_finetune.py: 'linear_scaled_lr = config.TRAIN.BASE_LR * config.DATA.BATCH_SIZE * "
                     "dist.get_world_size() / 512.0' (accumulation steps multiply it)", False),
        "per_device_batch": V(128, f"{defaults} '_C.DATA.BATCH_SIZE = 128'"),
        "effective_batch": V(2048, f"{SIMMIM} README: 16 GPUs x 128 (the GPU count is not in a config file)", False),
        "label_smoothing": V(0.1, f"{defaults} '_C.MODEL.LABEL_SMOOTHING = 0.1'"),
        "rand_augment": V("rand-m9-mstd0.5-inc1", f"{defaults} \"_C.AUG.AUTO_AUGMENT = 'rand-m9-mstd0.5-inc1'\""),
        "reprob": V(0.25, f"{defaults} '_C.AUG.REPROB = 0.25'"),
        "remode": V("pixel", f"{defaults} \"_C.AUG.REMODE = 'pixel'\""),
        "mixup": V(0.8, f"{defaults} '_C.AUG.MIXUP = 0.8'"),
        "cutmix": V(1.0, f"{defaults} '_C.AUG.CUTMIX = 1.0'"),
        "mixup_prob": V(1.0, f"{defaults} '_C.AUG.MIXUP_PROB = 1.0'"),
        "mixup_switch_prob": V(0.5, f"{defaults} '_C.AUG.MIXUP_SWITCH_PROB = 0.5'"),
        "crop_min_scale": V(0.08, f"{SIMMIM} data/data_finetune.py -> timm create_transform (scale default (0.08, 1.0))", False),
        "image_size": V(224, f"{cfg} 'IMG_SIZE: 224'"),
        "model_ema": V(False, f"{defaults} no EMA option (not used)"),
    }
    values.update({k: V(v.value, f"{cfg} {v.source}", v.verified) for k, v in backbone_lines.items()})
    return FinetuneRecipe(name, "simmim", release, values,
                          note="" if verified_release else "the reported accuracy is the paper's, not checked in this session")


def _cae(name, script, batch, update_freq, lr, epochs, layer_decay, drop_path, release) -> FinetuneRecipe:
    sh = f"{CAE} scripts/{script}:"
    args = f"{CAE} tools/run_class_finetuning.py:"
    return FinetuneRecipe(name, "cae", release, {
        "epochs": V(epochs, f"{sh} '--epochs {epochs}'"),
        "per_device_batch": V(batch, f"{sh} '--batch_size {batch}'"),
        "effective_batch": V(batch * update_freq * 32, f"{sh} 'NNODES=4', '--nproc_per_node=8', '--batch_size {batch}', '--update_freq {update_freq}'"),
        "base_lr": V(lr, f"{sh} '--lr {lr:g}'"),
        "lr_rule": V("absolute", f"{args} 'print(\"LR = %.8f\" % args.lr)': the lr is not rescaled by the batch"),
        "min_lr": V(1e-6, f"{args} \"parser.add_argument('--min_lr', type=float, default=1e-6\""),
        "warmup_epochs": V(5, f"{sh} '--warmup_epochs 5'"),
        "layer_decay": V(layer_decay, f"{sh} '--layer_decay {layer_decay}'"),
        "weight_decay": V(0.05, f"{sh} '--weight_decay 0.05'"),
        "drop_path": V(drop_path, f"{sh} '--drop_path {drop_path}'"),
        "label_smoothing": V(0.1, f"{args} \"parser.add_argument('--smoothing', type=float, default=0.1\""),
        "rand_augment": V("rand-m9-mstd0.5-inc1", f"{args} \"if not args.enable_linear_eval: args.aa = 'rand-m9-mstd0.5-inc1'\""),
        "reprob": V(0.25, f"{args} \"parser.add_argument('--reprob', type=float, default=0.25\""),
        "remode": V("pixel", f"{args} \"parser.add_argument('--remode', type=str, default='pixel'\""),
        "mixup": V(0.8, f"{sh} '--mixup 0.8'"),
        "cutmix": V(1.0, f"{sh} '--cutmix 1.0'"),
        "mixup_prob": V(1.0, f"{args} \"parser.add_argument('--mixup_prob', type=float, default=1.0\""),
        "mixup_switch_prob": V(0.5, f"{args} \"parser.add_argument('--mixup_switch_prob', type=float, default=0.5\""),
        "pooling": V("mean", f"{args} 'parser.set_defaults(use_mean_pooling=True)'"),
        "model_ema": V(False, f"{args} \"parser.add_argument('--model_ema', action='store_true', default=False)\""),
        "model_ema_decay": V(0.9999, f"{args} \"parser.add_argument('--model_ema_decay', type=float, default=0.9999\""),
    }, note="the reported accuracy is the paper's, not checked in this session")


def _convmae() -> FinetuneRecipe:
    cmd = f"{CONVMAE}, multi-node command (submitit_finetune.py --model convvit_base_patch16):"
    values = _mae_common({"cmd": cmd})
    values = {k: V(v.value, v.source.replace(MAE_ARGS, "Alpha-VL/ConvMAE main_finetune.py (MAE's, assumed unchanged)"), False)
              if MAE_ARGS in v.source else v for k, v in values.items()}
    values.update({
        "epochs": V(100, f"{cmd} '--epochs 100'"),
        "per_device_batch": V(32, f"{cmd} '--batch_size 32'"),
        "effective_batch": V(1024, f"{cmd} '--nodes 4' x 8 GPUs x '--batch_size 32'"),
        "base_lr": V(5e-4, f"{cmd} '--blr 5e-4'"),
        "layer_decay": V(0.65, f"{cmd} '--layer_decay 0.65'"),
        "drop_path": V(0.1, f"{cmd} '--drop_path 0.1'"),
        "lr_rule": V("blr/256", "Alpha-VL/ConvMAE main_finetune.py (MAE's linear scaling rule, assumed unchanged)", False),
    })
    return FinetuneRecipe("convmae-base", "mr_mae", "ConvMAE-B fine-tuned weight: 84.982 top-1 (Alpha-VL/ConvMAE FINETUNE.md '* Acc@1 84.982')", values)


def _crate() -> FinetuneRecipe:
    table = f"{CRATE} README.md, 'Finetuning pretrained CRATE' table:"
    script = f"{CRATE} finetune.py:"
    return FinetuneRecipe("crate-base", "crate_mae", "CRATE-B transfer to CIFAR-10 (README table; accuracy not given there)", {
        "epochs": V(200, f"{table} '| cifar10 | adamW | 5e-5 | 200 | 256 |'"),
        "per_device_batch": V(256, f"{table} '| cifar10 | adamW | 5e-5 | 200 | 256 |'"),
        "effective_batch": V(256, f"{script} one process (torch.nn.DataParallel) with '--bs'"),
        "base_lr": V(5e-5, f"{table} '| cifar10 | adamW | 5e-5 | 200 | 256 |'"),
        "lr_rule": V("absolute", f"{script} 'optimizer = optim.AdamW(net.parameters(), lr=args.lr, ...)'"),
        "min_lr": V(0.0, f"{script} 'torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.n_epochs)' (eta_min 0)"),
        "warmup_epochs": V(0, f"{script} no warm-up"),
        "layer_decay": V(1.0, f"{script} one parameter group (no layer decay)"),
        "weight_decay": V(0.01, f"{script} 'optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01, ...)'"),
        "drop_path": V(0.0, f"{script} CRATE_base() built without drop path"),
        "label_smoothing": V(0.0, f"{script} 'criterion = nn.CrossEntropyLoss()'"),
        "rand_augment": V(None, f"{script} 'transforms.RandAugment(args.rand_aug_n, args.rand_aug_m)' is torchvision's RandAugment "
                          "(n 2, m 14 of 31), not timm's: not reproduced here"),
        "reprob": V(0.0, f"{script} \"parser.add_argument('--erase_prob',type=float, default=0.0)\""),
        "mixup": V(0.0, f"{script} no MixUp"),
        "cutmix": V(0.0, f"{script} no CutMix"),
        "model_ema": V(False, f"{script} no EMA"),
    }, note="CRATE's released classifiers were trained from scratch; this is its transfer fine-tuning")


def _hpm(name, script, batch, epochs, release) -> FinetuneRecipe:
    """HPM's scripts/finetune_*.sh on its main_finetune.py (MAE's, with HPM's layer decay 0.8)."""
    sh = f"{HPM} scripts/{script}:"
    args = f"{HPM} main_finetune.py:"
    return FinetuneRecipe(name, "hpm", release, {
        "epochs": V(epochs, f"{sh} '--epochs {epochs}'"),
        "per_device_batch": V(batch, f"{sh} '--batch_size {batch}'"),
        "effective_batch": V(batch * 8, f"{sh} '--nproc_per_node=8' x '--batch_size {batch}' x '--accum_iter 1' (one node)"),
        "base_lr": V(5e-4, f"{sh} '--blr 5e-4'"),
        "lr_rule": V("blr/256", f"{args} 'args.lr = args.blr * eff_batch_size / 256'"),
        "min_lr": V(1e-6, f"{args} \"parser.add_argument('--min_lr', type=float, default=1e-6\""),
        "warmup_epochs": V(5, f"{sh} '--warmup_epochs 5'"),
        "layer_decay": V(0.8, f"{sh} '--layer_decay 0.8'"),
        "weight_decay": V(0.05, f"{sh} '--weight_decay 0.05'"),
        "drop_path": V(0.1, f"{sh} '--drop_path 0.1'"),
        "label_smoothing": V(0.1, f"{args} \"parser.add_argument('--smoothing', type=float, default=0.1\""),
        "rand_augment": V("rand-m9-mstd0.5-inc1", f"{args} \"parser.add_argument('--aa', type=str, default='rand-m9-mstd0.5-inc1'\""),
        "reprob": V(0.25, f"{sh} '--reprob 0.25'"),
        "remode": V("pixel", f"{args} \"parser.add_argument('--remode', type=str, default='pixel'\""),
        "mixup": V(0.8, f"{sh} '--mixup 0.8'"),
        "cutmix": V(1.0, f"{sh} '--cutmix 1.0'"),
        "mixup_prob": V(1.0, f"{args} \"parser.add_argument('--mixup_prob', type=float, default=1.0\""),
        "mixup_switch_prob": V(0.5, f"{args} \"parser.add_argument('--mixup_switch_prob', type=float, default=0.5\""),
        "crop_min_scale": V(0.08, f"{HPM} util/datasets.py build_transform -> timm create_transform (scale default (0.08, 1.0))", False),
        "pooling": V("mean", f"{args} \"parser.add_argument('--global_pool', action='store_true')\", 'parser.set_defaults(global_pool=True)'"),
        "model_ema": V(False, f"{args} no EMA of the fine-tuned weights"),
    }, note="the reported accuracy is the README's results table, after 800 pre-training epochs")
def _spark(name, arch, row: str, release) -> FinetuneRecipe:
    """SparK's downstream_imagenet: one row of `HP_DEFAULT_VALUES` (arg.py) per architecture, in the
    order `HP_DEFAULT_NAMES = ['bs', 'ep', 'wp_ep', 'opt', 'base_lr', 'lr_scale', 'wd', 'mixup', 'rep_aug', 'drop_path', 'ema']`."""
    line = f"{SPARK} downstream_imagenet/arg.py: \"'{arch}': {row}\""
    bs, ep, wp_ep, _opt, base_lr, lr_scale, wd, mixup, _rep_aug, drop_path, ema = (
        x.strip().strip("'") for x in row.strip("()").split(","))
    data = f"{SPARK} downstream_imagenet/data.py:"
    util = f"{SPARK} downstream_imagenet/util.py:"
    return FinetuneRecipe(name, "spark", release, {
        "epochs": V(int(ep), f"{line} (ep)"),
        "effective_batch": V(int(bs), f"{SPARK} downstream_imagenet/arg.py HP_DEFAULT_VALUES: the '{bs}' opening this architecture's row (bs: the global batch)"),
        "base_lr": V(float(base_lr), f"{line} (base_lr)"),
        "lr_rule": V("blr/256", f"{SPARK} downstream_imagenet/arg.py: 'args.lr = args.base_lr * args.glb_batch_size / 256'"),
        "warmup_epochs": V(int(wp_ep), f"{line} (wp_ep)"),
        "layer_decay": V(float(lr_scale), f"{line} (lr_scale: layer i gets lr_scale ** (N + 1 - i), downstream_imagenet/lr_decay.py)"),
        "weight_decay": V(float(wd), f"{line} (wd)"),
        "drop_path": V(float(drop_path), f"{line} (drop_path)"),
        "mixup": V(float(mixup), f"{line} (mixup)"),
        "cutmix": V(1.0, f"{util} 'mixup_fn = BatchMixup(mixup_alpha=args.mixup, cutmix_alpha=1.0, ...'"),
        "label_smoothing": V(0.1, f"{util} 'label_smoothing=0.1, num_classes=num_classes'"),
        "reprob": V(0.25, f"{data} \"auto_augment='v0', interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1\""),
        "remode": V("pixel", f"{data} \"re_mode='pixel'\""),
        "rand_augment": V(None, f"{data} TrivialAugmentWide replaces timm's AutoAugment 'v0' below 384 px: not reproduced here", False),
        "pooling": V("mean", f"{SPARK} downstream_imagenet: global average pooling (timm ResNet; official ConvNeXt 'x.mean([-2, -1])' + norm)"),
        "image_size": V(224, f"{SPARK} downstream_imagenet/arg.py: 'img_size: int = 224'"),
        "model_ema": V(True, f"{line} (ema)"),
        "model_ema_decay": V(float(ema), f"{line} (ema)"),
    }, note="the optimizer is the trainer's AdamW; SparK uses " + ("LAMB" if "lamb" in row else "Adam") + " (arg.py 'opt')")


RECIPES: dict[str, FinetuneRecipe] = {r.name: r for r in (
    _mae("mae-vit-base", "vit_base_patch16", "ViT-Base", 32, 4, 100, 5e-4, 0.65, 0.1,
         "mae_finetuned_vit_base.pth: 83.664 top-1 (FINETUNE.md 'reference ImageNet accuracy')"),
    _mae("mae-vit-large", "vit_large_patch16", "'Script for ViT-Large'", 32, 4, 50, 1e-3, 0.75, 0.2,
         "mae_finetuned_vit_large.pth: 85.952 top-1 (FINETUNE.md 'reference ImageNet accuracy')"),
    _mae("mae-vit-huge", "vit_huge_patch14", "'Script for ViT-Huge'", 16, 8, 50, 1e-3, 0.75, 0.3,
         "mae_finetuned_vit_huge.pth: 86.928 top-1 (FINETUNE.md 'reference ImageNet accuracy')"),
    _simmim("simmim-swin-base-224", "configs/swin_base__100ep/simmim_finetune__swin_base__img224_window7__100ep.yaml", {
        "layer_decay": V(0.9, "'LAYER_DECAY: 0.9'"),
        "window_size": V(7, "'WINDOW_SIZE: 7'"),
        "pooling": V("mean", "Swin's average-pooled head (MODEL.TYPE: swin)"),
    }, "SimMIM Swin-B, 224 px, window 7 (paper: 84.0 top-1 after 800 pre-training epochs)"),
    _simmim("simmim-vit-base", "configs/vit_base__800ep/simmim_finetune__vit_base__img224__800ep.yaml", {
        "layer_decay": V(0.65, "'LAYER_DECAY: 0.65'"),
        "pooling": V("mean", "'USE_MEAN_POOLING: True'"),
    }, "SimMIM ViT-B, 224 px (paper: 83.8 top-1)"),
    _cae("cae-base", "cae_base_finetune.sh", 128, 1, 8e-3, 100, 0.65, 0.1, "CAE-B fine-tuned (paper: 83.9 top-1 after 1600 epochs)"),
    _cae("cae-large", "cae_large_finetune.sh", 64, 2, 2e-3, 50, 0.75, 0.2, "CAE-L fine-tuned (paper: 86.3 top-1)"),
    _convmae(),
    _crate(),
    _hpm("hpm-vit-base", "finetune_base.sh", 48, 100, "HPM ViT-B/16, 800 pre-training epochs: 84.2 top-1 (README results table)"),
    _hpm("hpm-vit-large", "finetune_large.sh", 64, 50, "HPM ViT-L/16, 800 pre-training epochs: 85.8 top-1 (README results table)"),
    _spark("spark-resnet50", "resnet50", "(2048, 300, 5,  'lamb', 0.002,   0.7, 0.02, 0.1, 0, 0.05, 0.9999)",
           "SparK ResNet-50 fine-tuned: 80.6 top-1 (README 'Pre-trained weights' table)"),
    _spark("spark-resnet101", "resnet101", "(2048, 300, 5,  'lamb', 0.001,   0.8, 0.02, 0.1, 0, 0.2,  0.9999)",
           "SparK ResNet-101 fine-tuned: 82.2 top-1 (README table)"),
    _spark("spark-convnext-small", "convnext_small", "(4096, 400, 20, 'adam', 0.0002,  0.7, 0.01, 0.8, 3, 0.3,  0.9999)",
           "SparK ConvNeXt-S fine-tuned: 84.1 top-1 (README table)"),
    _spark("spark-convnext-base", "convnext_base", "(4096, 400, 20, 'adam', 0.0001,  0.7, 0.01, 0.8, 3, 0.4,  0.9999)",
           "SparK ConvNeXt-B fine-tuned: 84.8 top-1 (README table)"),
)}

# MAE's linear-probe protocol (`mim-hub eval --protocol linear --probe mae`), with its sources.
MAE_LINPROBE = f"{MAE} FINETUNE.md, 'Linear Probing' (submitit_linprobe.py):"
LINEAR_PROBE_MAE = {
    "effective_batch": V(16384, f"{MAE_LINPROBE} 'the effective batch size is 512 (`batch_size` per gpu) * 4 (`nodes`) * 8 (gpus per node) = 16384'"),
    "base_lr": V(0.1, f"{MAE_LINPROBE} '--blr 0.1'"),
    "weight_decay": V(0.0, f"{MAE_LINPROBE} '--weight_decay 0.0'"),
    "epochs": V(90, f"{MAE_LINPROBE} '--epochs 90' (ViT-L/H: 'It is sufficient to train 50 epochs')"),
    "warmup_epochs": V(10, f"{MAE} main_linprobe.py: \"parser.add_argument('--warmup_epochs', type=int, default=10\"", False),
    "pooling": V("cls", f"{MAE_LINPROBE} '--model vit_base_patch16 --cls_token'"),
    "optimizer": V("LARS", f"{MAE} main_linprobe.py: 'optimizer = LARS(model_without_ddp.head.parameters(), lr=args.lr, "
                   "weight_decay=args.weight_decay)' (util/lars.py)", False),
    "head": V("BatchNorm1d(affine=False, eps=1e-6) + Linear", f"{MAE} main_linprobe.py: 'model.head = torch.nn.Sequential("
              "torch.nn.BatchNorm1d(model.head.in_features, affine=False, eps=1e-6), model.head)'", False),
    "reported_vit_base": V(68.0, f"{MAE} FINETUNE.md linear-probing table, row 'paper (TF/TPU)': 68.0 / 75.8 / 76.6 "
                           "(ViT-B/L/H); 'this repo (PT/GPU)': 67.8 / 76.0 / 77.2"),
}


def get_recipe(name: str) -> FinetuneRecipe:
    if name not in RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def learning_rate(recipe_rule: str, base_lr: float, effective_batch: int) -> float:
    """The lr the original would use at `effective_batch` (see the module's docstring)."""
    if recipe_rule == "blr/256":
        return base_lr * effective_batch / 256
    if recipe_rule == "blr/512":
        return base_lr * effective_batch / 512
    if recipe_rule == "absolute":
        return base_lr
    raise ValueError(f"unknown lr rule {recipe_rule!r}; known: blr/256, blr/512, absolute")


def recipes_table(fmt: str = "table") -> str:
    """The recipes with every value's source (`mim-hub zoo` prints it)."""
    lines = []
    if fmt == "markdown":
        lines.append("| recipe | method | value | setting | source |\n|---|---|---|---|---|")
    for recipe in RECIPES.values():
        if fmt == "markdown":
            for key, value, source, verified in recipe.rows():
                lines.append(f"| {recipe.name} | {recipe.method} | {key} | `{value}` | {source}{'' if verified else ' (unverified)'} |")
            continue
        lines.append(f"recipe {recipe.name} ({recipe.method}): {recipe.release}" + (f"; {recipe.note}" if recipe.note else ""))
        for key, value, source, verified in recipe.rows():
            lines.append(f"    {key:18s} {value!s:22s} {source}{'' if verified else '  [unverified]'}")
    if fmt != "markdown":
        lines.append("linear probe --probe mae (MAE's protocol):")
        for key, v in LINEAR_PROBE_MAE.items():
            lines.append(f"    {key:18s} {v.value!s:22s} {v.source}{'' if v.verified else '  [unverified]'}")
    return "\n".join(lines)
