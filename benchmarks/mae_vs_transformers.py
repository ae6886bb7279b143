"""MAE against transformers' ViTMAE with the same weights, in one process.

    python benchmarks/mae_vs_transformers.py [--size base|tiny] [--batch 8] [--repeats 7] [--threads N]

Times encoder inference (all patches: ours without a mask, ViTMAE with mask_ratio 0), the
pre-training forward and forward+backward (mask 0.75, same noise), checks that both compute the
same numbers, and prints the ratio transformers / ours (> 1 means we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

sys.path.insert(0, os.path.dirname(__file__))
from timing import interleaved  # noqa: E402

from mim_hub import MAEConfig, MAEForPreTraining, MAEModel  # noqa: E402

SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 decoder_hidden_size=512, decoder_num_hidden_layers=8, decoder_num_attention_heads=16, decoder_intermediate_size=2048),
    "tiny": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                 decoder_hidden_size=128, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=512),
}


def to_transformers_state(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our MAE weights under transformers' ViTMAE names (fused qkv split into q/k/v)."""
    out = {}
    for key, value in ours.items():
        new = key.replace("mae.", "vit.", 1) if key.startswith("mae.") else "vit." + key if not key.startswith("decoder.") else key
        new = new.replace("embeddings.pos_embed", "embeddings.position_embeddings").replace("patch_embed.", "patch_embeddings.")
        new = new.replace("vit.encoder.layers.", "vit.layers.").replace("decoder.transformer.layers.", "decoder.decoder_layers.")
        new = new.replace(".norm1.", ".layernorm_before.").replace(".norm2.", ".layernorm_after.").replace(".attn.o_proj.", ".attention.o_proj.")
        if ".attn.qkv_proj." in new:
            q, k, v = value.chunk(3, dim=0)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
                out[new.replace("attn.qkv_proj", f"attention.{name}")] = part.clone()
            continue
        out[new] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dims = SIZES[args.size]
    ours = MAEForPreTraining(MAEConfig(**dims, norm_pix_loss=True)).eval()
    theirs_config = ViTMAEConfig(**dims, layer_norm_eps=1e-6, norm_pix_loss=True, mask_ratio=0.75)
    theirs = ViTMAEForPreTraining(theirs_config).eval()
    missing, unexpected = theirs.load_state_dict(to_transformers_state(ours.state_dict()), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    ours_encoder = MAEModel(MAEConfig(**dims)).eval()
    ours_encoder.load_state_dict(ours.mae.state_dict(), strict=False)
    theirs_encoder = ViTMAEModel(ViTMAEConfig(**dims, layer_norm_eps=1e-6, mask_ratio=0.0)).eval()
    theirs_encoder.load_state_dict({k[4:]: v for k, v in theirs.state_dict().items() if k.startswith("vit.")})

    x = torch.randn(args.batch, 3, 224, 224)
    noise = torch.rand(args.batch, 196)
    with torch.no_grad():
        a, b = ours(x, noise=noise), theirs(x, noise=noise)
        assert torch.allclose(a.loss, b.loss, rtol=1e-4, atol=1e-5), (a.loss, b.loss)
        assert torch.allclose(a.logits, b.logits, rtol=1e-3, atol=1e-4)
        enc_ours = ours_encoder(x).last_hidden_state
        enc_theirs = theirs_encoder(x, noise=torch.arange(196.0).expand(args.batch, -1)).last_hidden_state
        assert torch.allclose(enc_ours, enc_theirs, rtol=1e-3, atol=1e-4)

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            model(x, noise=noise).loss.backward()
        return run

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    results = {}
    timings = interleaved({"ours": no_grad(lambda: ours_encoder(x)),
                           "transformers": no_grad(lambda: theirs_encoder(x, noise=torch.arange(196.0).expand(args.batch, -1)))}, repeats=args.repeats)
    results["encoder inference"] = timings
    results["pre-training forward"] = interleaved({"ours": no_grad(lambda: ours(x, noise=noise)),
                                                   "transformers": no_grad(lambda: theirs(x, noise=noise))}, repeats=args.repeats)
    ours.train(), theirs.train()
    results["pre-training forward+backward"] = interleaved({"ours": step(ours), "transformers": step(theirs)}, repeats=args.repeats)

    print(f"MAE ViT-{args.size} 224px, batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'measure':32s} {'ours ms':>10s} {'transformers ms':>16s} {'ratio':>7s}")
    for name, t in results.items():
        ratio = t["transformers"] / t["ours"]
        t["ratio"] = ratio
        print(f"{name:32s} {t['ours'] * 1e3:10.1f} {t['transformers'] * 1e3:16.1f} {ratio:7.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
