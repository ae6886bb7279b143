"""White-box measurements of CRATE models, the quantities the CRATE papers are about:

- `attention_maps`: per layer and head, how the cls token attends to the patches (the emergent
  segmentation of CRATE), as [layers, B, heads, h, w] and as a picture;
- `layer_statistics`: per layer, the sparsity of the ISTA output (fraction of exact zeros) and
  the coding rate of the tokens, in total and compressed against the layer's own subspaces
  (MSSA's projections U_k): R(Z) = 1/2 logdet(I + d / (N eps^2) Z^T Z) and
  R^c(Z; U) = sum_k 1/2 logdet(I + p / (N eps^2) (U_k^T Z)^T (U_k^T Z)).
"""

from __future__ import annotations

import torch


def _encoder(model):
    return getattr(model, "crate", model)


@torch.no_grad()
def attention_maps(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """[layers, B, heads, h, w]: attention of the cls token to every patch, per layer and head."""
    encoder = _encoder(model).eval()
    out = encoder(pixel_values, output_attentions=True)
    side = encoder.config.image_size // encoder.config.patch_size
    return torch.stack([a[:, :, 0, 1:].reshape(a.shape[0], a.shape[1], side, side) for a in out.attentions])


def coding_rate(tokens: torch.Tensor, eps: float = 0.5) -> torch.Tensor:
    """R(Z) for tokens [N, d] (one image): 1/2 logdet(I + d/(N eps^2) Z^T Z)."""
    n, d = tokens.shape
    gram = tokens.T @ tokens * (d / (n * eps**2))
    return 0.5 * torch.logdet(torch.eye(d, dtype=tokens.dtype) + gram)


@torch.no_grad()
def layer_statistics(model, pixel_values: torch.Tensor, eps: float = 0.5) -> list[dict]:
    """Per encoder layer: `sparsity` of its output (ISTA's ReLU zeros), `coding_rate` of its
    tokens and `compressed_coding_rate` against that layer's MSSA subspaces (means over images)."""
    encoder = _encoder(model).eval()
    out = encoder(pixel_values, output_hidden_states=True)
    stats = []
    for index, layer in enumerate(encoder.layers):
        z = out.hidden_states[index + 1].double()  # output of layer `index` (before any final norm)
        heads, size = layer.attn.num_heads, layer.attn.head_size
        basis = layer.attn.qkv_proj.weight.double().reshape(heads, size, -1)  # U_k^T rows
        rates, compressed = [], []
        for image in z:
            rates.append(coding_rate(image, eps))
            compressed.append(sum(coding_rate(image @ basis[k].T, eps) for k in range(heads)))
        stats.append({
            "layer": index,
            "sparsity": (out.hidden_states[index + 1] == 0).float().mean().item(),
            "coding_rate": torch.stack(rates).mean().item(),
            "compressed_coding_rate": torch.stack(compressed).mean().item(),
        })
    return stats


def attention_picture(maps: torch.Tensor, image_index: int = 0, cell: int = 48):
    """A PIL picture: one row per layer, one column per head, each cell the cls attention map."""
    from PIL import Image

    layers, _, heads, h, w = maps.shape
    canvas = Image.new("L", (heads * (cell + 2), layers * (cell + 2)), 255)
    for layer in range(layers):
        for head in range(heads):
            m = maps[layer, image_index, head]
            m = ((m - m.min()) / (m.max() - m.min() + 1e-12) * 255).byte().numpy()
            canvas.paste(Image.fromarray(m).resize((cell, cell), Image.NEAREST), (head * (cell + 2), layer * (cell + 2)))
    return canvas
