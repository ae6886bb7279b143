"""Per method: our base-size models and what users would otherwise run, with identical weights.

Each builder returns a dict of measures; each measure maps contender name -> zero-argument
callable, plus `flops` (analytic forward FLOPs of one call) where known. Builders for methods
without a transformers counterpart compare with the plain eager formulation (attention weights
materialised, no SDPA)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))


def vit_encoder_flops(tokens: int, width: int, depth: int, mlp: int, batch: int, patch_pixels: int = 0) -> float:
    """Forward FLOPs of `depth` pre-norm ViT blocks over `tokens` tokens (multiply-add = 2)."""
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 2 * 2 * tokens * tokens * width
    return batch * (depth * per_layer + 2 * tokens * patch_pixels * width)


def bf16_autocast_supported(device: str) -> bool:
    """bf16 autocast where the hardware has bf16 arithmetic (CUDA's check; AVX-512 BF16 / AMX on CPU)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_step(model, device: str, *args, bf16: bool = False, **kwargs):
    """One pre-training step as a zero-argument callable: zero the gradients, forward (under bf16
    autocast when asked), backward of `.loss`."""
    def run():
        model.train()
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(*args, **kwargs).loss
        loss.backward()
    return run


BF16_STEP = "pre-training step, bf16 autocast"
# A/A measure: ours against an identical copy of itself. Its ratio is 1 but for the machine's
# noise, so its quartiles show how far from 1 a ratio of this run must be to mean anything.
NOISE_FLOOR = "pre-training step, noise floor (A/A)"
NOISE_FLOOR_TWIN = "ours, identical copy"


def with_bf16_step(measures: dict, device: str, contenders: dict, *args, flops: float | None = None, measure: str = BF16_STEP,
                   **kwargs) -> dict:
    """`measures` plus a bf16-autocast pre-training step (`measure`) of each of `contenders`
    (name -> model), where the hardware has bf16 arithmetic."""
    if bf16_autocast_supported(device):
        row = {name: training_step(model, device, *args, bf16=True, **kwargs) for name, model in contenders.items()}
        measures[measure] = {**row, **({"flops": flops} if flops else {})}
    return measures


COMPILED_STEP = "pre-training step, compiled (fwd+bwd)"


def compiled_step_row(ours, theirs, device: str, x, noise, *, backend: str = "inductor", flops: float | None = None) -> dict:
    """The MAE step with `--compile`'s per-block torch.compile (a copy of `ours`, same weights) as
    "ours", against the eager step of `ours` and of transformers' ViTMAE; `compile_s` is the first
    compiled step's time, the compilation included (timed before the interleaved rounds)."""
    import copy
    import time

    from mim_hub.training.compiling import compile_blocks

    compiled = copy.deepcopy(ours)
    blocks = compile_blocks(compiled, backend=backend)
    step = training_step(compiled, device, x, noise=noise)
    started = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - started
    return {"ours": step, "ours eager": training_step(ours, device, x, noise=noise),
            "transformers ViTMAEForPreTraining": training_step(theirs, device, x, noise=noise),
            "compile_s": compile_s, "compiled_blocks": blocks, "backend": backend, **({"flops": flops} if flops else {})}


def mae_pairs(batch: int, device: str, size: str = "base", compile_backend: str = "inductor") -> dict:
    from mae_vs_transformers import SIZES, to_transformers_state
    from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

    from mim_hub import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEModel

    dims = SIZES[size]
    torch.manual_seed(0)
    ours = MAEForPreTraining(MAEConfig(**dims, norm_pix_loss=True)).to(device)
    theirs = ViTMAEForPreTraining(ViTMAEConfig(**dims, layer_norm_eps=1e-6, norm_pix_loss=True)).to(device)
    theirs.load_state_dict(to_transformers_state(ours.state_dict()))
    ours_encoder = MAEModel(MAEConfig(**dims)).to(device).eval()
    ours_encoder.load_state_dict(ours.mae.state_dict(), strict=False)
    theirs_encoder = ViTMAEModel(ViTMAEConfig(**dims, layer_norm_eps=1e-6, mask_ratio=0.0)).to(device).eval()
    theirs_encoder.load_state_dict({k[4:]: v for k, v in theirs.state_dict().items() if k.startswith("vit.")})
    classifier = MAEForImageClassification(MAEConfig(**dims, num_labels=1000, use_mean_pooling=True)).to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    noise = torch.rand(batch, 196, device=device)
    ordered = torch.arange(196.0, device=device).expand(batch, -1)
    width, depth, mlp = dims["hidden_size"], dims["num_hidden_layers"], dims["intermediate_size"]
    dw, dd, dm = dims["decoder_hidden_size"], dims["decoder_num_hidden_layers"], dims["decoder_intermediate_size"]
    enc_flops = vit_encoder_flops(197, width, depth, mlp, batch, 768)
    pre_flops = vit_encoder_flops(50, width, depth, mlp, batch, 768) + vit_encoder_flops(197, dw, dd, dm, batch)

    def infer(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    measures = {
        "encoder inference": {"ours": infer(lambda: ours_encoder(x)), "transformers ViTMAEModel": infer(lambda: theirs_encoder(x, noise=ordered)), "flops": enc_flops},
        "pre-training forward": {"ours": infer(lambda: ours.eval()(x, noise=noise)), "transformers ViTMAEForPreTraining": infer(lambda: theirs.eval()(x, noise=noise)), "flops": pre_flops},
        "pre-training step (fwd+bwd)": {"ours": training_step(ours, device, x, noise=noise),
                                        "transformers ViTMAEForPreTraining": training_step(theirs, device, x, noise=noise), "flops": 3 * pre_flops},
        "classifier forward": {"ours": infer(lambda: classifier(x)), "flops": enc_flops},
    }
    measures = with_bf16_step(measures, device, {"ours": ours, "transformers ViTMAEForPreTraining": theirs}, x, noise=noise, flops=3 * pre_flops)
    # the same model twice: the spread of a ratio that is 1 by construction, in the same run
    twin = MAEForPreTraining(MAEConfig(**dims, norm_pix_loss=True)).to(device)
    twin.load_state_dict(ours.state_dict())
    measures[NOISE_FLOOR] = {"ours": training_step(ours, device, x, noise=noise), NOISE_FLOOR_TWIN: training_step(twin, device, x, noise=noise)}
    # built only when measured (compiling takes minutes on a CPU)
    measures[COMPILED_STEP] = lambda: compiled_step_row(ours, theirs, device, x, noise, backend=compile_backend, flops=3 * pre_flops)
    return measures


# method -> builder; the other methods add theirs below as they land.
PAIRS = {"mae": mae_pairs}


def color_mae_pairs(batch: int, device: str, size: str = "base") -> dict:
    """ColorMAE is MAE's network with other masks: against ViTMAE with the same weights and masks."""
    from mae_vs_transformers import SIZES, to_transformers_state
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    from mim_hub import ColorMAEConfig, ColorMAEForPreTraining
    from mim_hub.masking import ColorNoiseMaskGenerator, generate_noise_patterns

    dims = SIZES[size]
    torch.manual_seed(0)
    ours = ColorMAEForPreTraining(ColorMAEConfig(**dims, norm_pix_loss=True)).to(device)
    theirs = ViTMAEForPreTraining(ViTMAEConfig(**dims, layer_norm_eps=1e-6, norm_pix_loss=True)).to(device)
    theirs.load_state_dict(to_transformers_state(ours.state_dict()))
    x = torch.randn(batch, 3, 224, 224, device=device)
    noise = ColorNoiseMaskGenerator(generate_noise_patterns("green", 16, 32), 14, 0.75)(batch, torch.Generator().manual_seed(0)).to(device)
    width, depth, mlp = dims["hidden_size"], dims["num_hidden_layers"], dims["intermediate_size"]
    flops = vit_encoder_flops(50, width, depth, mlp, batch, 768) + vit_encoder_flops(197, dims["decoder_hidden_size"], dims["decoder_num_hidden_layers"], dims["decoder_intermediate_size"], batch)

    measures = {"pre-training step (fwd+bwd)": {"ours": training_step(ours, device, x, noise=noise),
                                                "transformers ViTMAEForPreTraining": training_step(theirs, device, x, noise=noise), "flops": 3 * flops}}
    return with_bf16_step(measures, device, {"ours": ours, "transformers ViTMAEForPreTraining": theirs}, x, noise=noise, flops=3 * flops)


def crate_mae_pairs(batch: int, device: str, size: str = "base") -> dict:
    """No transformers counterpart: against the plain eager formulation (attention weights
    materialised, no SDPA) of the same model."""
    from mim_hub import CrateMAEConfig, CrateMAEForPreTraining, CrateMAEModel

    dims = {"base": {}, "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, decoder_num_hidden_layers=2, decoder_num_attention_heads=3)}[size]
    torch.manual_seed(0)
    model = CrateMAEForPreTraining(CrateMAEConfig(**dims)).to(device)
    encoder = CrateMAEModel(model.config).to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    noise = torch.rand(batch, 196, device=device)
    return _eager_vs_sdpa(model, device, encoder, x, {"noise": noise})


def hpm_pairs(batch: int, device: str, size: str = "base") -> dict:
    """No transformers counterpart: HPM at base size (MAE's encoder, the reconstructor and the
    loss predictor, both 8 layers 512 wide) against its eager formulation, masked by uniform noise
    (the hard-patch masks change which patches, not how many)."""
    from mim_hub import HPMConfig, HPMForPreTraining, HPMModel

    dims = {"base": {}, "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, decoder_hidden_size=192,
                                     decoder_num_hidden_layers=2, decoder_num_attention_heads=3, decoder_intermediate_size=768)}[size]
    torch.manual_seed(0)
    model = HPMForPreTraining(HPMConfig(**dims)).to(device)
    encoder = HPMModel(model.config).to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    noise = torch.rand(batch, 196, device=device)
    return _eager_vs_sdpa(model, device, encoder, x, {"noise": noise})


PAIRS.update({"color_mae": color_mae_pairs, "crate_mae": crate_mae_pairs, "hpm": hpm_pairs})


def _eager_vs_sdpa(model, device: str, encoder, x, step_inputs: dict) -> dict:
    """Encoder inference and a pre-training step (fp32, and bf16 autocast where supported), ours
    (SDPA) against the same model with its attention weights materialised (the eager formulation)."""

    def infer(**kw):
        def run():
            with torch.no_grad():
                encoder(x, **kw)
        return run

    measures = {"encoder inference": {"ours": infer(), "eager attention": infer(output_attentions=True)}}
    for name, bf16 in (("pre-training step (fwd+bwd)", False), (BF16_STEP, True)):
        if bf16 and not bf16_autocast_supported(device):
            continue
        measures[name] = {"ours": training_step(model, device, x, bf16=bf16, **step_inputs),
                          "eager attention": training_step(model, device, x, bf16=bf16, output_attentions=True, **step_inputs)}
    return measures


def cae_pairs(batch: int, device: str, size: str = "base") -> dict:
    """CAE at base size (encoder, 4-layer regressor and decoder; the paper's block masks of 98 of
    196 patches, blocks of at least 16) against its eager formulation; labels are random token ids."""
    import random

    from mim_hub import CAEConfig, CAEForPreTraining, CAEModel
    from mim_hub.masking import BlockMaskGenerator

    dims = {"base": {}, "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, decoder_hidden_size=192,
                                     regressor_num_attention_heads=3, decoder_num_attention_heads=3, decoder_intermediate_size=768)}[size]
    torch.manual_seed(0)
    config = CAEConfig(**dims)
    model = CAEForPreTraining(config).to(device)
    encoder = CAEModel(config).to(device).eval()
    generator = BlockMaskGenerator(14, config.num_masking_patches, config.min_mask_patches_per_block)
    rng = random.Random(0)
    mask = torch.stack([torch.as_tensor(generator(rng)).flatten() for _ in range(batch)]).bool().to(device)
    labels = torch.randint(0, config.vocab_size, (int(mask.sum()),), device=device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    return _eager_vs_sdpa(model, device, encoder, x, {"bool_masked_pos": mask, "labels": labels})


def mr_mae_pairs(batch: int, device: str, size: str = "base") -> dict:
    """MR-MCMAE's hybrid (ConvMAE-Base: two masked-convolution stages, 11 transformer blocks) at
    mask 0.75 without teachers, against its eager formulation."""
    from mim_hub import MRMAEConfig, MRMAEForPreTraining, MRMAEModel

    dims = {"base": {}, "tiny": dict(conv_hidden_sizes=[64, 96], hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                     decoder_num_hidden_layers=1)}[size]
    torch.manual_seed(0)
    model = MRMAEForPreTraining(MRMAEConfig(**dims, norm_pix_loss=True)).to(device)
    encoder = MRMAEModel(model.config).to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    return _eager_vs_sdpa(model, device, encoder, x, {"noise": torch.rand(batch, 196, device=device)})


PAIRS.update({"cae": cae_pairs, "mr_mae": mr_mae_pairs})


def simmim_pairs(batch: int, device: str, size: str = "base") -> dict:
    """SimMIM's Swin-B (192 px, window 6) and BEiT-style ViT-B (224 px) against transformers'
    `SwinForMaskedImageModeling` / `ViTForMaskedImageModeling` (the same SimMIM head). Swin: the
    same math. ViT: ours as a plain ViT against theirs with the same weights (the same model), and
    SimMIM's own ViT (shared relative position bias and layer scale) against their plain ViT, where
    ours does a little more work (see simmim_vs_transformers.py)."""
    from simmim_vs_transformers import contenders

    results = {}  # base size even under --quick: the transformers configurations are fixed there
    for name, (models, x, mask) in contenders(device, batch).items():
        ours, theirs = models["mim_hub"], models["transformers"]
        label = "Swin" if name.startswith("swin") else "ViT"

        def infer(model, x=x, mask=mask):
            def run():
                with torch.no_grad():
                    model.eval()(x, bool_masked_pos=mask)
            return run

        results[f"{name} pre-training forward"] = {"ours": infer(ours), f"transformers {label}ForMaskedImageModeling": infer(theirs)}
        contenders_of_pair = {"ours": ours, f"transformers {label}ForMaskedImageModeling": theirs}
        results[f"{name} pre-training step (fwd+bwd)"] = {n: training_step(m, device, x, bool_masked_pos=mask) for n, m in contenders_of_pair.items()}
        with_bf16_step(results, device, contenders_of_pair, x, bool_masked_pos=mask, measure=f"{name} {BF16_STEP}")
    return results


PAIRS["simmim"] = simmim_pairs


CPU_KERNEL = "mim_cpu_fused"
CPU_KERNEL_RIVAL = "same model, attn_implementation=sdpa"


def cpu_attention_pairs(batch: int, device: str, size: str = "base") -> dict:
    """The registered "mim_cpu_fused" attention (layers/attention_cpu.py) against the default
    "sdpa" on one model (ours = mim_cpu_fused), in the training steps it is meant for: MAE under
    bf16 autocast (SDPA's slow bf16 backward on CPU) and SimMIM's ViT-B with its learned relative
    position bias (SDPA's math path for a mask that needs a gradient), fp32 and bf16."""
    from mae_vs_transformers import SIZES

    from mim_hub import MAEConfig, MAEForPreTraining, SimMIMConfig, SimMIMForPreTraining

    torch.manual_seed(0)
    dims = SIZES[size]
    mae = MAEForPreTraining(MAEConfig(**dims, norm_pix_loss=True)).to(device)
    simmim = SimMIMForPreTraining(SimMIMConfig(backbone="vit", drop_path_rate=0.0, **({} if size == "base" else dict(
        hidden_size=dims["hidden_size"], num_hidden_layers=dims["num_hidden_layers"], num_attention_heads=dims["num_attention_heads"],
        intermediate_size=dims["intermediate_size"])))).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, generator=g).to(device)
    noise = torch.rand(batch, 196, generator=g).to(device)
    mask = (torch.rand(batch, 196, generator=g) < 0.6).to(device)

    def step(model, implementation, bf16, **inputs):
        run = training_step(model, device, x, bf16=bf16, **inputs)

        def with_implementation():
            model.set_attn_implementation(implementation)
            run()
        return with_implementation

    measures = {}
    cases = [("mae", mae, {"noise": noise}, True), ("simmim vit-b-224 (rel-pos bias)", simmim, {"bool_masked_pos": mask}, False),
             ("simmim vit-b-224 (rel-pos bias)", simmim, {"bool_masked_pos": mask}, True)]
    for label, model, inputs, bf16 in cases:
        if bf16 and not bf16_autocast_supported(device):
            continue
        measure = f"{label} {BF16_STEP if bf16 else 'pre-training step (fwd+bwd)'}: {CPU_KERNEL} vs sdpa"
        measures[measure] = {"ours": step(model, CPU_KERNEL, bf16, **inputs), CPU_KERNEL_RIVAL: step(model, "sdpa", bf16, **inputs)}
    return measures


PAIRS["cpu_attention"] = cpu_attention_pairs


def spark_pairs(batch: int, device: str, size: str = "base") -> dict:
    """SparK: the dense encoder against transformers' own ResNetModel (the same weights, exported
    by `to_transformers`); the pre-training step against the original's formulation of the sparse
    norms (gather the visible vectors, BatchNorm1d / LayerNorm on them, scatter back: SparK's
    `SparseBatchNorm2d` / `SparseConvNeXtLayerNorm`) on the same model, where ours weights the
    statistics by the mask without gathering."""
    import copy

    import torch.nn.functional as F

    from mim_hub import SparKConfig, SparKForImageClassification, SparKForPreTraining
    from mim_hub.models.spark import sparse
    from mim_hub.models.spark.export_transformers import to_transformers

    dims = {"base": dict(backbone="resnet"), "tiny": dict(backbone="resnet", depths=[1, 1, 1, 1], hidden_sizes=[64, 128, 256, 512],
                                                          decoder_hidden_size=256)}[size]
    torch.manual_seed(0)
    ours = SparKForPreTraining(SparKConfig(**dims)).to(device)
    classifier = SparKForImageClassification(SparKConfig(**dims, num_labels=1000)).to(device).eval()
    encoder = classifier.spark
    theirs_encoder = to_transformers(encoder).to(device).eval()

    class GatherBatchNorm(sparse.MaskedBatchNorm2d):
        def forward(self, x, mask=None):
            if mask is None:
                return super().forward(x)
            where = mask.like(x).squeeze(1)
            bhwc = x.permute(0, 2, 3, 1)
            out = torch.zeros_like(bhwc)
            out[where] = F.batch_norm(bhwc[where], self.running_mean, self.running_var, self.weight, self.bias,
                                      self.training, self.momentum, self.eps)
            return out.permute(0, 3, 1, 2)

    original = copy.deepcopy(ours)
    for module in original.modules():
        if type(module) is sparse.MaskedBatchNorm2d:
            module.__class__ = GatherBatchNorm
    x = torch.randn(batch, 3, 224, 224, device=device)
    noise = torch.rand(batch, 49)

    def infer(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    return {
        "encoder inference": {"ours": infer(lambda: encoder(x)), "transformers ResNetModel": infer(lambda: theirs_encoder(x))},
        "classifier forward": {"ours": infer(lambda: classifier(x))},
        "pre-training step (fwd+bwd)": {"ours": training_step(ours, device, x, noise=noise),
                                        "original gather/scatter norms": training_step(original, device, x, noise=noise)},
    }


PAIRS["spark"] = spark_pairs
