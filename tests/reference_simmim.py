"""An independent, functional re-statement of the original SimMIM forward (microsoft/SimMIM:
BEiT-style ViT and Swin-V1 encoders, the 1x1 conv + PixelShuffle decoder, the L1 loss) over
ORIGINAL-format state dicts, written from the fixtures' numerics notes with explicit loops where
our models vectorise. The golden fixtures check this reference; the reference then checks the
converter on configurations the fixtures do not cover (other depths, heads, windows that shrink
to the stage resolution, per-block + shared tables, absolute positions, no layer scale, ...).

Also `random_original_state`, which writes random ORIGINAL-format state dicts for such configs.
"""

import torch
import torch.nn.functional as F


def rel_index(wh, ww, cls):
    """The original relative_position_index, by explicit loops."""
    n = wh * ww
    coords = [(i, j) for i in range(wh) for j in range(ww)]
    size = (2 * wh - 1) * (2 * ww - 1)
    index = torch.zeros(n + cls, n + cls, dtype=torch.long)
    for a, (i1, j1) in enumerate(coords):
        for b, (i2, j2) in enumerate(coords):
            index[a + cls, b + cls] = (i1 - i2 + wh - 1) * (2 * ww - 1) + (j1 - j2 + ww - 1)
    if cls:
        index[0, :] = size
        index[:, 0] = size + 1
        index[0, 0] = size + 2
    return index


def rel_bias(table, wh, ww, cls):
    index = rel_index(wh, ww, cls)
    n = index.shape[0]
    return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)


def attention(x, qkv_w, qkv_b, proj_w, proj_b, heads, bias=None, mask=None):
    B, N, C = x.shape
    qkv = F.linear(x, qkv_w, qkv_b).reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * q.shape[-1] ** -0.5
    attn = q @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(B // nw, nw, heads, N, N) + mask[None, :, None]).view(B, heads, N, N)
    return F.linear((attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, -1), proj_w, proj_b)


def mlp(sd, p, x):
    return F.linear(F.gelu(F.linear(x, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])


def ln(sd, p, x, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[p + "weight"], sd[p + "bias"], eps)


# ---------------------------------------------------------------------------------------------- ViT


def vit_encoder(sd, x, heads, mask=None):
    """-> tokens after `norm` (or Identity), [B, 1 + L, C]."""
    p = sd["patch_embed.proj.weight"].shape[-1]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    h, w = t.shape[-2:]
    t = t.flatten(2).transpose(1, 2)
    if mask is not None:
        m = mask.flatten(1).unsqueeze(-1).float()
        t = t * (1 - m) + sd["mask_token"] * m
    t = torch.cat([sd["cls_token"].expand(t.shape[0], -1, -1), t], 1)
    if "pos_embed" in sd:
        t = t + sd["pos_embed"]
    shared = rel_bias(sd["rel_pos_bias.relative_position_bias_table"], h, w, 1) if "rel_pos_bias.relative_position_bias_table" in sd else None
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        b = f"blocks.{i}."
        qkv_b = None
        if b + "attn.q_bias" in sd:
            qkv_b = torch.cat([sd[b + "attn.q_bias"], torch.zeros_like(sd[b + "attn.v_bias"]), sd[b + "attn.v_bias"]])
        bias = rel_bias(sd[b + "attn.relative_position_bias_table"], h, w, 1) if b + "attn.relative_position_bias_table" in sd else None
        if shared is not None:
            bias = shared if bias is None else bias + shared
        a = attention(ln(sd, b + "norm1.", t, 1e-6), sd[b + "attn.qkv.weight"], qkv_b, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"], heads, bias)
        g1, g2 = sd.get(b + "gamma_1"), sd.get(b + "gamma_2")
        t = t + (a if g1 is None else g1 * a)
        m = mlp(sd, b, ln(sd, b + "norm2.", t, 1e-6))
        t = t + (m if g2 is None else g2 * m)
        i += 1
    if "norm.weight" in sd:
        t = ln(sd, "norm.", t, 1e-6)
    return t, (h, w)


def vit_classify(sd, x, heads):
    t, _ = vit_encoder(sd, x, heads)
    pooled = ln(sd, "fc_norm.", t[:, 1:].mean(1), 1e-6) if "fc_norm.weight" in sd else t[:, 0]
    return F.linear(pooled, sd["head.weight"], sd["head.bias"]), pooled, t


# --------------------------------------------------------------------------------------------- Swin


def partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def reverse(windows, ws, H, W):
    B = windows.shape[0] // ((H // ws) * (W // ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def shift_mask(H, W, ws, shift):
    img = torch.zeros(1, H, W, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    mw = partition(img, ws).view(-1, ws * ws)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def swin_encoder(sd, x, window, heads_per_stage, mask=None):
    """-> (tokens after `norm` [B, L', C], (h', w'))."""
    p = sd["patch_embed.proj.weight"].shape[-1]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    H, W = t.shape[-2:]
    t = t.flatten(2).transpose(1, 2)
    if "patch_embed.norm.weight" in sd:
        t = ln(sd, "patch_embed.norm.", t, 1e-5)
    if mask is not None:
        m = mask.flatten(1).unsqueeze(-1).float()
        t = t * (1 - m) + sd["mask_token"] * m
    if "absolute_pos_embed" in sd:
        t = t + sd["absolute_pos_embed"]
    s = 0
    while f"layers.{s}.blocks.0.norm1.weight" in sd:
        heads = heads_per_stage[s]
        d = 0
        while f"layers.{s}.blocks.{d}.norm1.weight" in sd:
            b = f"layers.{s}.blocks.{d}."
            ws, shift = window, (0 if d % 2 == 0 else window // 2)
            if min(H, W) <= ws:
                ws, shift = min(H, W), 0
            B, L, C = t.shape
            short = t
            y = ln(sd, b + "norm1.", t, 1e-5).view(B, H, W, C)
            if shift:
                y = torch.roll(y, (-shift, -shift), (1, 2))
            win = partition(y, ws).view(-1, ws * ws, C)
            bias = rel_bias(sd[b + "attn.relative_position_bias_table"], ws, ws, 0).unsqueeze(0)
            a = attention(win, sd[b + "attn.qkv.weight"], sd.get(b + "attn.qkv.bias"), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"],
                          heads, bias, shift_mask(H, W, ws, shift) if shift else None)
            y = reverse(a.view(-1, ws, ws, C), ws, H, W)
            if shift:
                y = torch.roll(y, (shift, shift), (1, 2))
            t = short + y.reshape(B, L, C)
            t = t + mlp(sd, b, ln(sd, b + "norm2.", t, 1e-5))
            d += 1
        if f"layers.{s}.downsample.reduction.weight" in sd:
            B, L, C = t.shape
            y = t.view(B, H, W, C)
            y = torch.cat([y[:, 0::2, 0::2], y[:, 1::2, 0::2], y[:, 0::2, 1::2], y[:, 1::2, 1::2]], -1).view(B, -1, 4 * C)
            t = F.linear(ln(sd, f"layers.{s}.downsample.norm.", y, 1e-5), sd[f"layers.{s}.downsample.reduction.weight"])
            H, W = H // 2, W // 2
        s += 1
    return ln(sd, "norm.", t, 1e-5), (H, W)


def swin_classify(sd, x, window, heads):
    t, _ = swin_encoder(sd, x, window, heads)
    pooled = t.mean(1)
    return F.linear(pooled, sd["head.weight"], sd["head.bias"]), pooled, t


# ------------------------------------------------------------------------------------------- SimMIM


def simmim_pretrain(sd, x, mask, *, backbone, heads, window=None):
    """sd: the ORIGINAL pre-training state dict (`encoder.*`, `decoder.0.*`); mask [B, h, w] int."""
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    if backbone == "vit":
        t, (h, w) = vit_encoder(enc, x, heads, mask)
        t = t[:, 1:]
    else:
        t, (h, w) = swin_encoder(enc, x, window, heads, mask)
    z = t.transpose(1, 2).reshape(t.shape[0], -1, h, w)
    stride = int(round((sd["decoder.0.weight"].shape[0] / 3) ** 0.5))
    x_rec = F.pixel_shuffle(F.conv2d(z, sd["decoder.0.weight"], sd["decoder.0.bias"]), stride)
    p = enc["patch_embed.proj.weight"].shape[-1]
    m = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).contiguous()
    loss = (F.l1_loss(x, x_rec, reduction="none") * m).sum() / (m.sum() + 1e-5) / x.shape[1]
    return loss, x_rec, z


# ------------------------------------------------------------------------- random original states


def _r(*shape, scale=0.1, gen=None):
    return torch.randn(*shape, generator=gen) * scale


def random_original_vit(*, img, patch, dim, depth, heads, mlp_hidden, shared=True, per_block=False, abs_pos=False,
                        gamma=True, qv_bias=True, mean_pool=False, num_classes=0, pretrain=True, stride=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    side = img // patch
    rows = (2 * side - 1) ** 2 + 3
    sd = {"cls_token": _r(1, 1, dim, gen=g), "patch_embed.proj.weight": _r(dim, 3, patch, patch, gen=g), "patch_embed.proj.bias": _r(dim, gen=g)}
    if pretrain:
        sd["mask_token"] = _r(1, 1, dim, gen=g)
    if abs_pos:
        sd["pos_embed"] = _r(1, side * side + 1, dim, gen=g)
    if shared:
        sd["rel_pos_bias.relative_position_bias_table"] = _r(rows, heads, scale=0.5, gen=g)
        sd["rel_pos_bias.relative_position_index"] = rel_index(side, side, 1)
    for i in range(depth):
        b = f"blocks.{i}."
        if gamma:
            sd[b + "gamma_1"], sd[b + "gamma_2"] = 0.1 + _r(dim, gen=g), 0.1 + _r(dim, gen=g)
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = 1 + _r(dim, gen=g), _r(dim, gen=g)
        if qv_bias:
            sd[b + "attn.q_bias"], sd[b + "attn.v_bias"] = _r(dim, gen=g), _r(dim, gen=g)
        if per_block:
            sd[b + "attn.relative_position_bias_table"] = _r(rows, heads, scale=0.5, gen=g)
            sd[b + "attn.relative_position_index"] = rel_index(side, side, 1)
        sd[b + "attn.qkv.weight"] = _r(3 * dim, dim, gen=g)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = _r(dim, dim, gen=g), _r(dim, gen=g)
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = 1 + _r(dim, gen=g), _r(dim, gen=g)
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = _r(mlp_hidden, dim, gen=g), _r(mlp_hidden, gen=g)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = _r(dim, mlp_hidden, gen=g), _r(dim, gen=g)
    if mean_pool:
        sd["fc_norm.weight"], sd["fc_norm.bias"] = 1 + _r(dim, gen=g), _r(dim, gen=g)
    else:
        sd["norm.weight"], sd["norm.bias"] = 1 + _r(dim, gen=g), _r(dim, gen=g)
    if num_classes:
        sd["head.weight"], sd["head.bias"] = _r(num_classes, dim, gen=g), _r(num_classes, gen=g)
    if pretrain:
        sd = {"encoder." + k: v for k, v in sd.items()}
        stride = stride or patch
        sd["decoder.0.weight"], sd["decoder.0.bias"] = _r(stride * stride * 3, dim, 1, 1, gen=g), _r(stride * stride * 3, gen=g)
    return sd


def random_original_swin(*, img, patch, embed, depths, heads, window, mlp_ratio=4, qkv_bias=True, ape=False, patch_norm=True,
                         num_classes=0, pretrain=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    res = img // patch
    sd = {"patch_embed.proj.weight": _r(embed, 3, patch, patch, gen=g), "patch_embed.proj.bias": _r(embed, gen=g)}
    if patch_norm:
        sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"] = 1 + _r(embed, gen=g), _r(embed, gen=g)
    if pretrain:
        sd["mask_token"] = _r(1, 1, embed, gen=g)
    if ape:
        sd["absolute_pos_embed"] = _r(1, res * res, embed, gen=g)
    dim = embed
    for s, (depth, nh) in enumerate(zip(depths, heads)):
        for d in range(depth):
            b = f"layers.{s}.blocks.{d}."
            ws, shift = window, (0 if d % 2 == 0 else window // 2)
            if res <= ws:
                ws, shift = res, 0
            hidden = int(dim * mlp_ratio)
            if shift:
                sd[b + "attn_mask"] = shift_mask(res, res, ws, shift)
            sd[b + "norm1.weight"], sd[b + "norm1.bias"] = 1 + _r(dim, gen=g), _r(dim, gen=g)
            sd[b + "attn.relative_position_bias_table"] = _r((2 * ws - 1) ** 2, nh, scale=0.5, gen=g)
            sd[b + "attn.relative_position_index"] = rel_index(ws, ws, 0)
            sd[b + "attn.qkv.weight"] = _r(3 * dim, dim, gen=g)
            if qkv_bias:
                sd[b + "attn.qkv.bias"] = _r(3 * dim, gen=g)
            sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = _r(dim, dim, gen=g), _r(dim, gen=g)
            sd[b + "norm2.weight"], sd[b + "norm2.bias"] = 1 + _r(dim, gen=g), _r(dim, gen=g)
            sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = _r(hidden, dim, gen=g), _r(hidden, gen=g)
            sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = _r(dim, hidden, gen=g), _r(dim, gen=g)
        if s < len(depths) - 1:
            sd[f"layers.{s}.downsample.reduction.weight"] = _r(2 * dim, 4 * dim, gen=g)
            sd[f"layers.{s}.downsample.norm.weight"], sd[f"layers.{s}.downsample.norm.bias"] = 1 + _r(4 * dim, gen=g), _r(4 * dim, gen=g)
            dim, res = dim * 2, res // 2
    sd["norm.weight"], sd["norm.bias"] = 1 + _r(dim, gen=g), _r(dim, gen=g)
    if num_classes:
        sd["head.weight"], sd["head.bias"] = _r(num_classes, dim, gen=g), _r(num_classes, gen=g)
    if pretrain:
        sd = {"encoder." + k: v for k, v in sd.items()}
        stride = patch * 2 ** (len(depths) - 1)
        sd["decoder.0.weight"], sd["decoder.0.bias"] = _r(stride * stride * 3, dim, 1, 1, gen=g), _r(stride * stride * 3, gen=g)
    return sd
