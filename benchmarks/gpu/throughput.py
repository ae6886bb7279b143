"""GPU session, step 2: every method's pre-training step at base size under bf16 autocast, at batch
64, 128 and 256: ours eager, ours compiled (`--compile`'s per-block torch.compile), and transformers'
own model where one exists (ViTMAE, ViT and Swin masked image modeling) or else our model with the
eager attention formula. A step is what the trainer does: forward under bf16 autocast, backward,
and a fused AdamW step (float32 weights).

    python benchmarks/gpu/throughput.py --out DIR [--dry-run] [--methods mae,cae,...]

Per row: milliseconds per step (median of interleaved rounds), images/s, the step's peak GPU
memory above the resting weights and optimizer state, the ratio to the reference (median and
quartiles of per-round ratios), and the fraction of the measured bf16 matmul ceiling that the
step's FLOPs (counted by torch's FlopCounterMode on the model itself) represent. Rows are written to
OUT/throughput.json as they are measured, breadth first (every method eager at batch 128, then MAE
whole, then the other batches and the compiled rows), so a run cut off by its budget keeps the
most useful rows.

--dry-run: 32-px stand-ins on the CPU, batch 2, one round, only MAE compiled (aot_eager, not inductor).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/: timing, pairs, mae_vs_transformers

from timing import interleaved_samples, paired_ratio, synchronize  # noqa: E402

BATCHES = (64, 128, 256)


def matmul_ceiling(device: str, dtype: torch.dtype, dry_run: bool) -> float:
    """Best FLOP/s of a large square product (8192^3 on a GPU), the fastest of 10 timings."""
    n = 256 if dry_run else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize()
    fastest = float("inf")
    for _ in range(10):
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        synchronize()
        fastest = min(fastest, (time.perf_counter() - started) / 5)
    return 2 * n**3 / fastest


# ---------------------------------------------------------------- the models, per method

TINY_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def vit_dims(tiny: bool) -> dict:
    """ViT-B/16 at 224 px with MAE's decoder, or a 32-px stand-in for the dry run."""
    from mae_vs_transformers import SIZES

    if tiny:
        return {**TINY_VIT, "decoder_hidden_size": 32, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
                "decoder_intermediate_size": 64}
    return {"image_size": 224, "patch_size": 16, **SIZES["base"]}


def mae_family(method: str, tiny: bool, device: str) -> dict:
    """MAE and ColorMAE against transformers' ViTMAEForPreTraining with the same weights and masks."""
    from mae_vs_transformers import to_transformers_state
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    import mim_hub

    dims = vit_dims(tiny)
    config_class, model_class = {"mae": (mim_hub.MAEConfig, mim_hub.MAEForPreTraining),
                                 "color_mae": (mim_hub.ColorMAEConfig, mim_hub.ColorMAEForPreTraining)}[method]
    ours = model_class(config_class(**dims, norm_pix_loss=True))
    theirs = ViTMAEForPreTraining(ViTMAEConfig(**dims, layer_norm_eps=1e-6, norm_pix_loss=True))
    theirs.load_state_dict(to_transformers_state(ours.state_dict()))

    side, grid = dims["image_size"], dims["image_size"] // dims["patch_size"]

    def inputs(batch):
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 3, side, side, generator=g)
        if method == "color_mae":
            from mim_hub.masking import ColorNoiseMaskGenerator, generate_noise_patterns

            noise = ColorNoiseMaskGenerator(generate_noise_patterns("green", 4, 2 * grid), grid, 0.75)(batch, g)
        else:
            noise = torch.rand(batch, grid * grid, generator=g)
        return (x,), {"noise": noise}

    return {"model": f"ViT-{'tiny' if tiny else 'B'}/16 224 px, decoder {dims['decoder_num_hidden_layers']}x{dims['decoder_hidden_size']}",
            "ours": ours, "reference": ("transformers ViTMAEForPreTraining", theirs), "inputs": inputs}


def simmim(variant: str, tiny: bool, device: str) -> dict:
    """SimMIM's Swin-B (192 px, window 6) against transformers' SwinForMaskedImageModeling; SimMIM's
    ViT-B (shared relative position bias, layer scale) against transformers' plain
    ViTForMaskedImageModeling, where ours does a little more work (benchmarks/simmim_vs_transformers.py)."""
    from transformers import SwinConfig, SwinForMaskedImageModeling, ViTConfig, ViTForMaskedImageModeling

    import mim_hub

    if variant == "swin":
        swin = (dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, encoder_stride=8)
                if tiny else dict(image_size=192, patch_size=4, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                                  window_size=6, encoder_stride=32))
        ours = mim_hub.SimMIMForPreTraining(mim_hub.SimMIMConfig(backbone="swin", **{k: v for k, v in swin.items() if k != "encoder_stride"},
                                                                 **({"mask_patch_size": 8} if tiny else {})))
        theirs = SwinForMaskedImageModeling(SwinConfig(**swin, drop_path_rate=0.0))
        size, grid, name = swin["image_size"], (swin["image_size"] // swin["patch_size"]) ** 2, "transformers SwinForMaskedImageModeling"
        description = "Swin-tiny" if tiny else "Swin-B 192 px window 6"
    else:
        vit = dict(TINY_VIT) if tiny else {}
        ours = mim_hub.SimMIMForPreTraining(mim_hub.SimMIMConfig(backbone="vit", drop_path_rate=0.0, **vit, **({"mask_patch_size": 8} if tiny else {})))
        theirs = ViTForMaskedImageModeling(ViTConfig(**(vit or dict(image_size=224, patch_size=16)), encoder_stride=vit.get("patch_size", 16), qkv_bias=True))
        size = vit.get("image_size", 224)
        grid, name = (size // vit.get("patch_size", 16)) ** 2, "transformers ViTForMaskedImageModeling (plain ViT)"
        description = "ViT-tiny" if tiny else "ViT-B/16 224 px, SimMIM's (relative position bias, layer scale)"

    def inputs(batch):
        g = torch.Generator().manual_seed(batch)
        return (torch.randn(batch, 3, size, size, generator=g),), {"bool_masked_pos": torch.rand(batch, grid, generator=g) < 0.6}

    return {"model": description, "ours": ours, "reference": (name, theirs), "inputs": inputs}


def own_eager(method: str, tiny: bool, device: str) -> dict:
    """Methods without a transformers counterpart: against the same model with the eager attention
    formula (attention weights materialised, no SDPA kernel)."""
    import mim_hub
    from mim_hub.masking import BlockMaskGenerator

    side = 32 if tiny else 224
    if method == "cae":
        dims = dict(TINY_VIT, decoder_hidden_size=32, regressor_num_hidden_layers=1, regressor_num_attention_heads=2,
                    decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64, vocab_size=64,
                    num_masking_patches=6, min_mask_patches_per_block=2) if tiny else {}
        config = mim_hub.CAEConfig(**dims)
        ours = mim_hub.CAEForPreTraining(config)
        generator = BlockMaskGenerator(side // config.patch_size, config.num_masking_patches, config.min_mask_patches_per_block)

        def inputs(batch):
            import random

            rng = random.Random(batch)
            mask = torch.stack([torch.as_tensor(generator(rng)).flatten() for _ in range(batch)]).bool()
            g = torch.Generator().manual_seed(batch)
            return ((torch.randn(batch, 3, side, side, generator=g),),
                    {"bool_masked_pos": mask, "labels": torch.randint(0, config.vocab_size, (int(mask.sum()),), generator=g)})
        description = "CAE ViT-B/16 224 px, regressor 4, decoder 4" if not tiny else "CAE tiny"
    else:
        if method == "mr_mae":
            dims = dict(image_size=32, patch_size=8, conv_hidden_sizes=[8, 12], conv_depths=[1, 1], conv_patch_sizes=[2, 2],
                        conv_intermediate_sizes=[16, 24], hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                        decoder_intermediate_size=32) if tiny else {}
            ours = mim_hub.MRMAEForPreTraining(mim_hub.MRMAEConfig(**dims, norm_pix_loss=True))
            description = "ConvMAE-B hybrid 224 px (no teachers)" if not tiny else "MR-MAE tiny"
        elif method == "hpm":
            ours = mim_hub.HPMForPreTraining(mim_hub.HPMConfig(**vit_dims(tiny)))
            description = "HPM ViT-B/16 224 px, reconstructor and loss predictor 8x512" if not tiny else "HPM tiny"
        else:
            dims = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, decoder_num_hidden_layers=1,
                        decoder_num_attention_heads=2) if tiny else {}
            ours = mim_hub.CrateMAEForPreTraining(mim_hub.CrateMAEConfig(**dims))
            description = "CRATE-MAE-B 224 px" if not tiny else "CRATE-MAE tiny"
        grid = (side // ours.config.patch_size) ** 2

        def inputs(batch):
            g = torch.Generator().manual_seed(batch)
            return (torch.randn(batch, 3, side, side, generator=g),), {"noise": torch.rand(batch, grid, generator=g)}

    eager = copy.deepcopy(ours)
    eager.set_attn_implementation("eager")
    return {"model": description, "ours": ours, "reference": ("ours, eager attention", eager), "inputs": inputs}


BUILDERS = {
    "mae": lambda tiny, device: mae_family("mae", tiny, device),
    "simmim-swin": lambda tiny, device: simmim("swin", tiny, device),
    "simmim-vit": lambda tiny, device: simmim("vit", tiny, device),
    "color_mae": lambda tiny, device: mae_family("color_mae", tiny, device),
    "cae": lambda tiny, device: own_eager("cae", tiny, device),
    "mr_mae": lambda tiny, device: own_eager("mr_mae", tiny, device),
    "crate_mae": lambda tiny, device: own_eager("crate_mae", tiny, device),
    "hpm": lambda tiny, device: own_eager("hpm", tiny, device),  # masked by uniform noise: hard patches change which, not how many
}


# ---------------------------------------------------------------- measuring

class Contender:
    """A model, its fused AdamW and one training step on given inputs."""

    def __init__(self, model, device: str):
        from mim_hub.training.optim import adamw

        self.model = model.to(device).train()
        self.optimizer = adamw([{"params": [p for p in self.model.parameters() if p.requires_grad], "weight_decay": 0.05}], lr=1e-6)
        self.device = device

    def step(self, args, kwargs, bf16: bool):
        def run():
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device, dtype=torch.bfloat16, enabled=bf16):
                loss = self.model(*args, **kwargs).loss
            loss.backward()
            self.optimizer.step()
        return run


def step_flops(contender: Contender, args, kwargs, bf16: bool) -> float:
    """FLOPs of one forward + backward (matmuls, convolutions, attention), counted on the model."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    contender.optimizer.zero_grad(set_to_none=True)
    with counter:
        with torch.autocast(contender.device, dtype=torch.bfloat16, enabled=bf16):
            loss = contender.model(*args, **kwargs).loss
        loss.backward()
    contender.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def peak_bytes(fn, device: str) -> int | None:
    """Peak GPU memory of one call above what was allocated before it (activations, gradients,
    the optimizer's temporaries): the step's own footprint, whatever else is resident."""
    if device != "cuda":
        return None
    synchronize()
    resting = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    synchronize()
    return torch.cuda.max_memory_allocated() - resting


class Table:
    """The rows so far, rewritten to OUT/throughput.json after each measurement."""

    def __init__(self, path: str, header: dict):
        self.path, self.data = path, {**header, "rows": []}

    def add(self, rows: list[dict]) -> None:
        self.data["rows"].extend(rows)
        temporary = self.path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(self.data, handle, indent=2)
        os.replace(temporary, self.path)


def measure(method: str, entry: dict, batch: int, kinds: list[str], args, ceiling: float, table: Table, compiled_cache: dict) -> None:
    """One (method, batch): the contenders of `kinds` ("eager", "compiled", "reference") side by side."""
    device, bf16 = args.device, args.bf16
    step_args, step_kwargs = entry["inputs"](batch)
    step_args = tuple(a.to(device) for a in step_args)
    step_kwargs = {k: v.to(device) for k, v in step_kwargs.items()}
    if kinds == ["profile"]:
        profiles = {"ours": profile_steps(entry["ours_contender"].step(step_args, step_kwargs, bf16), device)}
        if method in compiled_cache:
            profiles["ours compiled"] = profile_steps(compiled_cache[method][0].step(step_args, step_kwargs, bf16), device)
        for name, found in profiles.items():
            print(f"{method} batch {batch} {name}: device busy {100 * found['busy_fraction']:.0f}% of the step; top: "
                  + "; ".join(f"{t['name'][:50]} {100 * (t['share_of_busy'] or 0):.0f}%" for t in found["top"][:4]), flush=True)
        table.data.setdefault("profiles", []).append({"method": method, "batch": batch, **profiles})
        table.add([])
        return
    contenders, compile_s = {}, None
    if "eager" in kinds:
        contenders["ours"] = entry["ours_contender"].step(step_args, step_kwargs, bf16)
    if "compiled" in kinds:
        if method not in compiled_cache:
            from mim_hub.training.compiling import compile_blocks

            model = copy.deepcopy(entry["ours"])
            blocks = compile_blocks(model, backend="inductor" if device == "cuda" else "aot_eager")
            compiled_cache[method] = (Contender(model, device), blocks)
        compiled, blocks = compiled_cache[method]
        fn = compiled.step(step_args, step_kwargs, bf16)
        started = time.perf_counter()
        fn()  # the compilation (a new batch size may recompile once, then runs dynamic)
        synchronize()
        compile_s = round(time.perf_counter() - started, 2)
        contenders["ours compiled"] = fn
    reference_name, _ = entry["reference"]
    if "reference" in kinds:
        contenders[reference_name] = entry["reference_contender"].step(step_args, step_kwargs, bf16)
    flops = step_flops(entry["ours_contender"], step_args, step_kwargs, bf16)
    samples = interleaved_samples(contenders, warmup=args.warmup, repeats=args.repeats)
    peaks = {name: peak_bytes(fn, device) for name, fn in contenders.items()}
    rows = []
    for name, seconds in samples.items():
        median = statistics.median(seconds)
        row = {"method": method, "model": entry["model"], "batch": batch, "contender": name, "ms": round(1000 * median, 2),
               "images_per_s": round(batch / median, 1), "peak_step_mib": None if peaks[name] is None else round(peaks[name] / 2**20, 1),
               "flops_per_step": flops, "fraction_of_bf16_ceiling": round(flops / median / ceiling, 4) if ceiling else None,
               "reference": reference_name}
        if name != reference_name and reference_name in samples:
            row["speedup_vs_reference"] = {k: round(v, 3) for k, v in paired_ratio(samples[reference_name], seconds).items()}
        if name == "ours compiled":
            row["first_call_s"], row["compiled_blocks"] = compile_s, compiled_cache[method][1]
        rows.append(row)
        print(f"{method:12s} batch {batch:3d} {name:45s} {row['ms']:8.2f} ms {row['images_per_s']:9.1f} img/s "
              f"{(row['fraction_of_bf16_ceiling'] or 0) * 100:5.1f}% of ceiling"
              + (f"  x{row['speedup_vs_reference']['median']:.2f} vs reference" if "speedup_vs_reference" in row else ""), flush=True)
    table.add(rows)


def profile_steps(fn, device: str, steps: int = 3) -> dict:
    """Where a step's time goes: torch.profiler over `steps` steps; the busiest kernels (GPU) or ops
    (CPU) by self time, and how much of the wall time the device was busy at all (well below 1: the
    step waits on Python and kernel launches, not arithmetic)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            fn()
        synchronize()
    wall = (time.perf_counter() - started) / steps

    def self_time(event) -> float:  # microseconds, over the profiled steps
        if device == "cuda":
            return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0) or 0
        return event.self_cpu_time_total

    events = list(profiler.key_averages())
    if device == "cuda":  # the kernels themselves: an aten op's device time is its kernels' (counted once)
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA] or events
    busy = sum(self_time(e) for e in events) / steps / 1e6
    top = sorted(events, key=self_time, reverse=True)[:12]
    return {"wall_s_per_step": round(wall, 5), "device_busy_s_per_step": round(busy, 5), "busy_fraction": round(busy / wall, 3),
            "top": [{"name": e.key[:120], "s_per_step": round(self_time(e) / steps / 1e6, 6), "calls_per_step": e.count / steps,
                     "share_of_busy": round(self_time(e) / steps / 1e6 / busy, 3) if busy else None} for e in top]}


def plan(methods: list[str], batches: tuple, compile_all: bool = True) -> list[tuple]:
    """(method, batch, kinds) in the order measured: breadth first, so that a cut-off run keeps
    every method's eager ratio, then MAE whole (the headline), then the rest (compiled rows of the
    other methods only with `compile_all`)."""
    middle = batches[len(batches) // 2]
    jobs = [(m, middle, ["eager", "reference"]) for m in methods]
    if "mae" in methods:
        jobs += [("mae", b, ["eager", "compiled", "reference"]) for b in batches]
        jobs += [("mae", batches[-1], ["profile"])]
    jobs += [(m, b, ["eager", "reference"]) for m in methods if m != "mae" for b in batches if b != middle]
    if compile_all:
        jobs += [(m, middle, ["eager", "compiled", "reference"]) for m in methods if m != "mae"]
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--methods", default=",".join(BUILDERS))
    args = parser.parse_args()
    args.device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("throughput: no GPU (use --dry-run on a CPU)")
    args.bf16 = not args.dry_run
    args.warmup, args.repeats = (1, 1) if args.dry_run else (2, 6)
    batches = (2,) if args.dry_run else BATCHES
    methods = [m for m in args.methods.split(",") if m]
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 stays float32; the step's matmuls run in bf16 under autocast
    ceiling = matmul_ceiling(args.device, torch.bfloat16 if args.bf16 else torch.float32, args.dry_run)
    print(f"matmul ceiling ({'bf16' if args.bf16 else 'fp32'}): {ceiling / 1e12:.1f} TFLOP/s", flush=True)
    table = Table(os.path.join(args.out, "throughput.json"),
                  {"ceiling_flops": ceiling, "ceiling_dtype": "bf16" if args.bf16 else "fp32", "batches": list(batches),
                   "step": "forward (bf16 autocast) + backward + fused AdamW, float32 weights", "repeats": args.repeats})
    built, compiled_cache = {}, {}
    for method, batch, kinds in plan(methods, batches, compile_all=not args.dry_run):
        if method not in built:
            torch.manual_seed(0)
            entry = BUILDERS[method](args.dry_run, args.device)
            entry["ours_contender"] = Contender(entry["ours"], args.device)
            entry["reference_contender"] = Contender(entry["reference"][1], args.device)
            built[method] = entry
        try:
            measure(method, built[method], batch, kinds, args, ceiling, table, compiled_cache)
        except Exception as error:  # one failing row (e.g. out of memory) must not cost the others
            print(f"{method} batch {batch}: {type(error).__name__}: {str(error)[:300]}", flush=True)
            table.add([{"method": method, "batch": batch, "error": f"{type(error).__name__}: {str(error)[:300]}"}])
            if args.device == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
