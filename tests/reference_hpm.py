"""An independent, functional re-statement of HPM's pre-training forward and losses
(Haochen-Wang409/HPM `models_mae_learn_loss.py`) over ORIGINAL-format state dicts, in the
original's own token order (encoder `x[~mask]`, decoder `[cls, visible | masked]`), written from
the fixtures' numerics notes. It checks the converter on configurations the golden fixtures do not
cover; the golden fixtures themselves check this reference."""

import torch
import torch.nn.functional as F

from reference_mae import block, encoder_tokens, n_blocks, random_original_state


def _decode(sd, x, prefix, norm, pred, heads):
    for i in range(n_blocks(sd, prefix)):
        x = block(sd, f"{prefix}{i}.", x, heads)
    x = F.layer_norm(x, (x.shape[-1],), sd[f"{norm}.weight"], sd[f"{norm}.bias"], 1e-6)
    return F.linear(x, sd[f"{pred}.weight"], sd[f"{pred}.bias"])[:, 1:]


def hpm_pretrain(sd, imgs, mask, heads, dec_heads, norm_pix_loss=False, relative=True):
    """(loss, loss_rec, loss_learn, pix_pred, loss_pred, latent) as the original computes them;
    `pix_pred` / `loss_pred` in the decoder's order [visible ascending | masked ascending]."""
    x, cls = encoder_tokens(sd, imgs)
    B, L, D = x.shape
    x = torch.cat([cls.expand(B, -1, -1), x[~mask].reshape(B, -1, D)], 1)
    for i in range(n_blocks(sd, "blocks.")):
        x = block(sd, f"blocks.{i}.", x, heads)
    latent = F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], 1e-6)
    x = F.linear(latent, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    Dd = x.shape[-1]
    pos = sd["decoder_pos_embed"][:, 1:].expand(B, -1, -1)
    num_masked = int(mask[0].sum())
    tokens = torch.cat([x[:, 1:] + pos[~mask].reshape(B, -1, Dd), sd["mask_token"] + pos[mask].reshape(B, -1, Dd)], 1)
    x = torch.cat([x[:, :1] + sd["decoder_pos_embed"][:, :1], tokens], 1)
    pix_pred = _decode(sd, x, "decoder_blocks.", "decoder_norm", "decoder_pred", dec_heads)
    loss_pred = _decode(sd, x, "decoder_blocks_losspred.", "decoder_norm_losspred", "decoder_pred_losspred", dec_heads).mean(-1)
    p = sd["patch_embed.proj.weight"].shape[-1]
    n, c, hh, ww = imgs.shape
    target = imgs.reshape(n, c, hh // p, p, ww // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * c)[mask].reshape(B, num_masked, -1)
    if norm_pix_loss:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    errors = (pix_pred[:, -num_masked:] - target) ** 2
    loss_rec, matrix = errors.mean(), errors.mean(-1).detach()
    predicted = loss_pred[:, -num_masked:]
    if relative:
        pos_ = matrix.unsqueeze(1) > matrix.unsqueeze(2)
        neg = matrix.unsqueeze(1) < matrix.unsqueeze(2)
        s = torch.sigmoid(predicted.unsqueeze(1) - predicted.unsqueeze(2))
        loss_learn = (-pos_.int() * torch.log(s + 1e-6) - neg.int() * torch.log(1 - s + 1e-6)).sum() / (pos_ + neg).sum()
    else:
        standard = (matrix - matrix.mean(1, keepdim=True)) / (matrix.var(1, keepdim=True) + 1e-6) ** 0.5
        loss_learn = ((predicted - standard) ** 2).mean()
    return loss_rec + loss_learn, loss_rec, loss_learn, pix_pred, loss_pred, latent


def random_hpm_state(*, img=32, patch=4, dim=64, depth=2, dec_dim=32, dec_depth=1, seed=0):
    """A random pre-training state dict with HPM's ORIGINAL key names: MAE's plus the loss predictor."""
    sd = random_original_state(img=img, patch=patch, dim=dim, depth=depth, dec_dim=dec_dim, dec_depth=dec_depth, seed=seed)
    twin = random_original_state(img=img, patch=patch, dim=dim, depth=depth, dec_dim=dec_dim, dec_depth=dec_depth, seed=seed + 1)
    for key, value in twin.items():
        if key.startswith("decoder_blocks."):
            sd["decoder_blocks_losspred." + key[len("decoder_blocks."):]] = value
    sd["decoder_norm_losspred.weight"], sd["decoder_norm_losspred.bias"] = twin["decoder_norm.weight"], twin["decoder_norm.bias"]
    sd["decoder_pred_losspred.weight"], sd["decoder_pred_losspred.bias"] = twin["decoder_pred.weight"], twin["decoder_pred.bias"]
    return sd
