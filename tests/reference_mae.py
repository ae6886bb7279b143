"""An independent, functional re-statement of the original MAE forward (facebookresearch/mae,
timm 0.3.2 blocks) over ORIGINAL-format state dicts, written from the fixtures' numerics notes.
It checks the converter on configurations the golden fixtures do not cover; the golden fixtures
themselves check this reference."""

import torch
import torch.nn.functional as F


def block(sd, prefix, x, heads, eps=1e-6):
    B, N, C = x.shape
    h = F.layer_norm(x, (C,), sd[f"{prefix}norm1.weight"], sd[f"{prefix}norm1.bias"], eps)
    qkv = F.linear(h, sd[f"{prefix}attn.qkv.weight"], sd.get(f"{prefix}attn.qkv.bias"))
    qkv = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(-1)
    h = (attn @ v).transpose(1, 2).reshape(B, N, C)
    x = x + F.linear(h, sd[f"{prefix}attn.proj.weight"], sd[f"{prefix}attn.proj.bias"])
    h = F.layer_norm(x, (C,), sd[f"{prefix}norm2.weight"], sd[f"{prefix}norm2.bias"], eps)
    h = F.linear(F.gelu(F.linear(h, sd[f"{prefix}mlp.fc1.weight"], sd[f"{prefix}mlp.fc1.bias"])), sd[f"{prefix}mlp.fc2.weight"], sd[f"{prefix}mlp.fc2.bias"])
    return x + h


def encoder_tokens(sd, imgs):
    p = sd["patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(imgs, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    return x + sd["pos_embed"][:, 1:], sd["cls_token"] + sd["pos_embed"][:, :1]


def n_blocks(sd, prefix):
    return len({k.split(".")[1] for k in sd if k.startswith(prefix)})


def mae_pretrain(sd, imgs, noise, mask_ratio, heads, dec_heads, norm_pix_loss):
    x, cls = encoder_tokens(sd, imgs)
    B, L, D = x.shape
    keep = int(L * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    x = torch.gather(x, 1, ids_shuffle[:, :keep, None].repeat(1, 1, D))
    mask = torch.ones(B, L)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    x = torch.cat([cls.expand(B, -1, -1), x], 1)
    for i in range(n_blocks(sd, "blocks.")):
        x = block(sd, f"blocks.{i}.", x, heads)
    latent = F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], 1e-6)
    x = F.linear(latent, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    Dd = x.shape[-1]
    tokens = torch.cat([x[:, 1:], sd["mask_token"].repeat(B, L + 1 - x.shape[1], 1)], 1)
    tokens = torch.gather(tokens, 1, ids_restore[:, :, None].repeat(1, 1, Dd))
    x = torch.cat([x[:, :1], tokens], 1) + sd["decoder_pos_embed"]
    for i in range(n_blocks(sd, "decoder_blocks.")):
        x = block(sd, f"decoder_blocks.{i}.", x, dec_heads)
    x = F.layer_norm(x, (Dd,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], 1e-6)
    pred = F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])[:, 1:]
    p = sd["patch_embed.proj.weight"].shape[-1]
    n, c, hh, ww = imgs.shape
    target = imgs.reshape(n, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * c)
    if norm_pix_loss:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    return loss, pred, mask, latent


def mae_classifier(sd, imgs, heads):
    x, cls = encoder_tokens(sd, imgs)
    x = torch.cat([cls.expand(x.shape[0], -1, -1), x], 1)
    for i in range(n_blocks(sd, "blocks.")):
        x = block(sd, f"blocks.{i}.", x, heads)
    D = x.shape[-1]
    if "fc_norm.weight" in sd:
        feat = F.layer_norm(x[:, 1:].mean(1), (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], 1e-6)
    else:
        feat = F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], 1e-6)[:, 0]
    return F.linear(feat, sd["head.weight"], sd["head.bias"])


def random_original_state(*, img=32, patch=4, chans=3, dim=64, depth=2, mlp=4, dec_dim=None, dec_depth=0, num_classes=0, global_pool=True, seed=0):
    """A random state dict with the ORIGINAL MAE key names and shapes."""
    from mim_hub.layers import get_2d_sincos_pos_embed

    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    L = (img // patch) ** 2
    sd = {
        "cls_token": r(1, 1, dim), "pos_embed": get_2d_sincos_pos_embed(dim, img // patch, cls_token=True)[None] + r(1, L + 1, dim),
        "patch_embed.proj.weight": r(dim, chans, patch, patch), "patch_embed.proj.bias": r(dim),
    }

    def blocks(prefix, d, n):
        for i in range(n):
            for name, shape in [("norm1", (d,)), ("norm2", (d,))]:
                sd[f"{prefix}{i}.{name}.weight"] = 1 + r(*shape)
                sd[f"{prefix}{i}.{name}.bias"] = r(*shape)
            for name, (o, ii) in [("attn.qkv", (3 * d, d)), ("attn.proj", (d, d)), ("mlp.fc1", (mlp * d, d)), ("mlp.fc2", (d, mlp * d))]:
                sd[f"{prefix}{i}.{name}.weight"] = r(o, ii) * 4
                sd[f"{prefix}{i}.{name}.bias"] = r(o)

    blocks("blocks.", dim, depth)
    if dec_dim:
        sd["norm.weight"], sd["norm.bias"] = 1 + r(dim), r(dim)
        sd["mask_token"] = r(1, 1, dec_dim)
        sd["decoder_pos_embed"] = get_2d_sincos_pos_embed(dec_dim, img // patch, cls_token=True)[None]
        sd["decoder_embed.weight"], sd["decoder_embed.bias"] = r(dec_dim, dim) * 4, r(dec_dim)
        blocks("decoder_blocks.", dec_dim, dec_depth)
        sd["decoder_norm.weight"], sd["decoder_norm.bias"] = 1 + r(dec_dim), r(dec_dim)
        sd["decoder_pred.weight"], sd["decoder_pred.bias"] = r(patch * patch * chans, dec_dim) * 4, r(patch * patch * chans)
    elif num_classes:
        key = "fc_norm" if global_pool else "norm"
        sd[f"{key}.weight"], sd[f"{key}.bias"] = 1 + r(dim), r(dim)
        sd["head.weight"], sd["head.bias"] = r(num_classes, dim) * 4, r(num_classes)
    else:
        sd["norm.weight"], sd["norm.bias"] = 1 + r(dim), r(dim)
    return sd
