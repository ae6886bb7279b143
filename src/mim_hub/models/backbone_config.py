"""What every method's config adds to be a transformers backbone config: `stage_names`,
`out_features` / `out_indices` (transformers' `BackboneConfigMixin` checks and aligns them) and
the optional feature pyramid `add_fpn` (BEiT's name) and `reshape_hidden_states` (DINOv2's: False
returns the tokens, prefix tokens first, instead of maps; what DPT's neck reads).

Stage names: a plain ViT has `stem` (the embeddings) then `stage1`..`stageN` (the output of each
block), as transformers' BEiT and DINOv2; Swin has `stem` then one stage per resolution, as
transformers' Swin; ConvMAE's hybrid has `conv1`, `conv2` (its convolution stages) in front of
those. Without `out_features` / `out_indices` a backbone returns the last stage only.
"""

from __future__ import annotations

from transformers.backbone_utils import BackboneConfigMixin


class MIMBackboneConfigMixin(BackboneConfigMixin):
    """Put first in a method config's bases; its `__post_init__` runs after the config's own."""

    def __post_init__(self, **kwargs):
        out_features = kwargs.pop("out_features", None)
        out_indices = kwargs.pop("out_indices", None)
        add_fpn = kwargs.pop("add_fpn", False)
        reshape_hidden_states = kwargs.pop("reshape_hidden_states", True)
        kwargs.pop("stage_names", None)  # always derived from the architecture
        super().__post_init__(**kwargs)
        if not isinstance(add_fpn, bool):
            raise ValueError(f"{type(self).__name__}: add_fpn must be true or false, got {add_fpn!r}")
        self.add_fpn = add_fpn
        self.reshape_hidden_states = bool(reshape_hidden_states)  # False: tokens [B, P + h*w, C] (DINOv2's option, for DPT)
        self.stage_names = self.backbone_stage_names()
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)

    def backbone_stage_names(self) -> list[str]:
        """The stages a backbone of this config can return, in forward order."""
        return ["stem"] + [f"stage{index}" for index in range(1, self.num_hidden_layers + 1)]

    def segmentation_stages(self) -> tuple[list[str], bool]:
        """(out_features, add_fpn) that a dense-prediction head (UperNet) takes from this backbone.
        A plain ViT: four blocks evenly spaced, the last included (4/6/8/12 of 12, as BEiT's 3, 5,
        7, 11) through BEiT's x4/x2/x1/x0.5 pyramid; too shallow for four distinct blocks, the last
        three stages and no pyramid. Backbones with stages of their own override this."""
        names = list(self.stage_names)
        chosen = sorted({max(1, round(self.num_hidden_layers * k / 12)) for k in (4, 6, 8, 12)})
        if len(chosen) < 4:
            return names[-3:], False
        return [f"stage{i}" for i in chosen], True

    def refresh_stage_names(self) -> None:
        """Recompute `stage_names` after an architecture field changed (e.g. a converter set
        `num_hidden_layers`), keeping the chosen stages when they still exist."""
        names = self.backbone_stage_names()
        if list(getattr(self, "stage_names", [])) == names:
            return
        features = [name for name in (self._out_features or []) if name in names] or None
        self.stage_names = names
        self.set_output_features_output_indices(out_features=features, out_indices=None)


__all__ = ["MIMBackboneConfigMixin"]
