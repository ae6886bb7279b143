"""What every mim_hub model shares: the PreTrainedModel base with timm-style hooks, output
types, the blocks built from a config's fields, and the classification loss."""

from __future__ import annotations

import copy
import inspect
import itertools
import os
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput

from .. import initialization as init
from ..layers.attention import Attention, InterfaceAttention
from ..layers.block import LayerScale, ViTBlock, drop_path_rates
from ..layers.relative_position import RelativePositionBias, relative_position_index
from .encoder import RecordedStackMixin, TransformersKwargs, Unpack, block_recorders, can_return_tuple
from .features import ClassifierFeaturesMixin
from ..utils.atomic import atomic_folder, is_atomic_temporary
from .library_internals import accelerate_hooks
from .geometry import GEOMETRY_FIELDS, adapt_geometry, geometry_changes
from .size_bounds import check_config_fits_weights

# from_pretrained arguments that say where the files are (to read the saved config alone)
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def hub_kwargs(kwargs: dict) -> dict:
    """The entries of a `from_pretrained` call's `kwargs` that say where its files are (`HUB_KWARGS`):
    what reading its saved config alone takes."""
    return {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}


@dataclass
class MIMModelOutput(ModelOutput):
    """Base model output.

    last_hidden_state: [B, N, D] tokens after the final norm (cls first where the model has one).
    pooler_output: [B, D] the feature the original classifier head receives.
    mask: [B, L] 1 = masked, when the call masked patches. ids_restore: [B, L] likewise.
    hidden_states / attentions: per block, when asked for.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MIMPreTrainingOutput(ModelOutput):
    """MAE-family pre-training output.

    loss: the total pre-training loss. logits: [B, L, p*p*C] per-patch pixel predictions in the
    original patch order. mask / ids_restore: as the base output. last_hidden_state: encoder
    output for the visible tokens ([cls, kept patches in ascending-noise order]).
    hidden_states / attentions: the encoder's, per block, when asked for (as transformers'
    ViTMAE); decoder_hidden_states / decoder_attentions: the decoder's (its input first).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None


def vit_blocks(config, stack: str = "", *, drop_path_rate: float | None = None, rates: list[float] | None = None,
               **block_kwargs) -> list[ViTBlock]:
    """The pre-norm blocks of one of `config`'s stacks, built from its fields: `stack` "" is the
    encoder (`hidden_size`, `num_hidden_layers`, `num_attention_heads`, `intermediate_size`),
    "decoder_" the decoder (`decoder_hidden_size`, ...), with the block numerics every config
    here shares (`qkv_bias`, `layer_norm_eps`, `hidden_act`, `attention_probs_dropout_prob`,
    `hidden_dropout_prob`). Stochastic depth rises to `drop_path_rate` (default: the config's
    for the encoder, none for another stack), or is given per block (`rates`). `block_kwargs`
    set the rest or override (SimMIM's and CAE's "qv" biases, layer scale, head width)."""
    depth = getattr(config, f"{stack}num_hidden_layers")
    if rates is None:
        rate = drop_path_rate if drop_path_rate is not None else (config.drop_path_rate if not stack else 0.0)
        rates = drop_path_rates(rate, depth)
    numerics = dict(qkv_bias=config.qkv_bias, layer_norm_eps=config.layer_norm_eps, hidden_act=config.hidden_act,
                    attention_dropout=config.attention_probs_dropout_prob, hidden_dropout=config.hidden_dropout_prob)
    width, heads, intermediate = (getattr(config, f"{stack}{f}") for f in ("hidden_size", "num_attention_heads", "intermediate_size"))
    return [ViTBlock(width, heads, intermediate, drop_path=rate, **{**numerics, **block_kwargs}) for rate in rates]


def classification_head(config) -> nn.Module:
    """The classifiers' final layer: Linear(`hidden_size` -> `num_labels`), or `nn.Identity` for
    `num_labels=0` (features only, as timm's `num_classes=0`)."""
    return nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config) -> torch.Tensor:
    """transformers' convention: regression, single-label or multi-label by `config.problem_type`."""
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return nn.functional.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


_NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "relative_position_bias_table", "gamma", "q_bias", "v_bias")


def offload_whole_blocks(model: nn.Module) -> None:
    """Make an offloaded model (`device_map` with "disk", or "cpu" next to an accelerator) load each
    block's weights as one unit, as accelerate's `preload_module_classes` does.

    accelerate hooks every module that holds tensors and brings its weights to the execution
    device only while that module's own `forward` runs; our blocks read their children's weights
    directly (fused qkv with a zero k bias, LayerScale folded into a Linear, CAE's cross-attention),
    which then are still on the meta device. transformers' `from_pretrained` does not pass
    `preload_module_classes`, so the hooks inside each offloaded block of a class in
    `_no_split_modules` (never split across devices) are replaced by one hook on the block."""
    try:
        from accelerate.hooks import AlignDevicesHook, add_hook_to_module, remove_hook_from_module
        from accelerate.utils import PrefixedDataset
    except ImportError:  # (no accelerate: no device map either)
        return
    units = set(getattr(model, "_no_split_modules", None) or ())
    regrouped: list[str] = []
    for name, module in model.named_modules():
        if type(module).__name__ not in units or any(name.startswith(done + ".") for done in regrouped):
            continue
        offloaded, resident = [], False
        for sub in module.modules():
            hooks = [h for h in accelerate_hooks(sub) if isinstance(h, AlignDevicesHook)]
            own = [h for h in hooks if h.offload and isinstance(h.weights_map, PrefixedDataset)]
            offloaded += own
            holds = next(iter(sub.parameters(recurse=False)), None) is not None or next(iter(sub.buffers(recurse=False)), None) is not None
            resident = resident or (holds and not own)
        if not offloaded or resident:  # on the execution device, or not all of it offloaded
            continue
        first = offloaded[0]
        for sub in module.modules():
            remove_hook_from_module(sub)
        add_hook_to_module(module, AlignDevicesHook(
            execution_device=first.execution_device, offload=True, weights_map=PrefixedDataset(first.weights_map.dataset, f"{name}."),
            offload_buffers=first.offload_buffers, place_submodules=True, skip_keys=first.skip_keys,
            tied_params_map=first.tied_params_map,
        ))
        regrouped.append(name)


class MIMPreTrainedModel(RecordedStackMixin, PreTrainedModel):
    """Base of every mim_hub model, with the hooks one trainer and one optimizer rely on:
    `no_weight_decay()`, `layer_id(name)` / `num_layers_for_decay()` (layer-wise lr decay),
    and transformers' gradient checkpointing. Hidden states and attention weights are recorded
    from the blocks `_can_record_outputs` names (see `models/encoder.py`)."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # transformers' `get_input_embeddings` then finds `embeddings.patch_embed` on a base model and
    # asks the base model from any model that wraps one (pre-training, classifier, backbone)
    _input_embed_layer = "patch_embed"
    supports_gradient_checkpointing = True
    # attention runs through transformers' interface (layers/attention.py), keyed by
    # `config._attn_implementation`; flash attention takes no additive bias, so a model with
    # relative positions or Swin windows refuses it at its first forward
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["ViTBlock"]
    _can_record_outputs = block_recorders(ViTBlock)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained`, made crash-safe: everything is written to a temporary
        folder beside the target (`utils.atomic.atomic_folder`) and then renamed into place (the
        whole folder when it is new, file by file otherwise), so an interrupted save never leaves
        a truncated file. Why an override and not only `atomic_folder` at our own call sites: a
        user's (or the Trainer's) `model.save_pretrained(folder)` over an earlier model must leave
        that model intact when it is killed midway (tests/test_robustness.py::
        test_save_pretrained_is_written_aside_then_renamed). Inside an `atomic_folder` of a caller
        (`training.saving.save_final`, the converters) it writes straight into that temporary
        folder: one temporary folder, never nested ones."""
        if kwargs.get("push_to_hub"):
            return super().save_pretrained(save_directory, *args, **kwargs)
        target = os.path.abspath(os.fspath(save_directory))
        if os.path.isfile(target):
            raise FileExistsError(f"{target} is a file, not a folder")
        if is_atomic_temporary(target):  # already the temporary folder of an atomic write
            return super().save_pretrained(target, *args, **kwargs)
        with atomic_folder(target, merge=True) as tmp:
            result = super().save_pretrained(tmp, *args, **kwargs)
            written = set(os.listdir(tmp))
            for name in os.listdir(target) if os.path.isdir(target) else ():  # weights of an earlier save this one lacks
                if name.startswith("model") and (name.endswith(".safetensors") or name.endswith(".index.json")) and name not in written:
                    os.remove(os.path.join(target, name))
        return result

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """Every attention layer here dispatches through the interface (`InterfaceAttention`), so
        `set_attn_implementation` applies (transformers guesses this from the class's source, and
        a module with its own attention class, CAE's cross-attention, would read as one that cannot)."""
        return True

    def post_init(self):
        super().post_init()
        # the attention layers read the implementation from the model's config (as transformers'
        # own layers do, `self.config._attn_implementation`); a layer of a nested model keeps its own
        for module in self.modules():
            if isinstance(module, InterfaceAttention) and module.config is None:
                module.config = self.config
        # Parameters a model freezes when it is built (fixed sin-cos tables, ...): loading replaces
        # parameter objects and would hand them back trainable, so from_pretrained freezes them again.
        self._frozen_parameter_names = frozenset(name for name, p in self.named_parameters() if not p.requires_grad)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`. `image_size=` / `window_size=` (or a `config=` holding
        them) that differ from the saved model's load it at that geometry: the call is
        `load_at_geometry`'s (see there)."""
        fields = cls._geometry_fields()
        requested = {field: kwargs.pop(field) for field in fields if field in kwargs}
        given = kwargs.get("config")
        # a config of the new geometry: load with the saved one first (there is none to compare with
        # when the weights come as `state_dict=` without a path: transformers' `from_pretrained(None, ...)`)
        if isinstance(given, PreTrainedConfig) and pretrained_model_name_or_path is not None:
            saved = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs(kwargs))
            changes = geometry_changes(saved, {f: getattr(given, f) for f in fields if hasattr(given, f)})
            if changes:
                kwargs["config"] = copy.deepcopy(given)
                for field in changes:
                    setattr(kwargs["config"], field, getattr(saved, field))
                requested = {**changes, **requested}
        if requested:
            return cls.load_at_geometry(pretrained_model_name_or_path, *model_args, **requested, **kwargs)
        return cls._load_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def load_at_geometry(cls, pretrained_model_name_or_path, *model_args, image_size=None, window_size=None, **kwargs):
        """Load a saved model at another geometry than it was saved with: `image_size` (a side or
        (h, w)) and, for Swin, `window_size`; other arguments as `from_pretrained`'s. The weights
        are read at the saved geometry, then moved (not copied) into a model of the new one,
        built on the meta device, with the position tables resized as the originals'
        fine-tuning scripts do (see `models/geometry.py`: relative position tables resampled,
        learned position tables interpolated, fixed sin-cos tables and index buffers computed for
        the new geometry), e.g. SimMIM's Swin pre-trained at 192 px / window 6, fine-tuned at
        224 px / window 7. Peak memory is that of one model (plus the resized tables).
        `mim-hub finetune --image-size/--window-size` calls it."""
        requested = {k: v for k, v in (("image_size", image_size), ("window_size", window_size)) if v is not None}
        unknown = sorted(set(requested) - set(cls._geometry_fields()))
        if unknown:
            raise ValueError(f"{cls.__name__} has no {', '.join(unknown)}: its geometry is {list(cls._geometry_fields())}")
        init_kwargs = {k: kwargs[k] for k in inspect.signature(cls.__init__).parameters if k in kwargs and k not in ("self", "config")}
        cls._check_sizes_fit_weights(pretrained_model_name_or_path, kwargs, requested)
        loaded = cls._load_pretrained(pretrained_model_name_or_path, *model_args, _sizes_checked=True, **kwargs)
        model, info = loaded if kwargs.get("output_loading_info") else (loaded, None)
        changes = geometry_changes(model.config, requested)
        if changes:
            model = model._at_geometry(changes, str(pretrained_model_name_or_path), model_args, init_kwargs)
        return (model, info) if info is not None else model

    @classmethod
    def _geometry_fields(cls) -> tuple[str, ...]:
        return tuple(f for f in GEOMETRY_FIELDS if f in getattr(cls.config_class, "__dataclass_fields__", {}))  # (MAE has no window)

    @classmethod
    def _load_pretrained(cls, pretrained_model_name_or_path, *model_args, _sizes_checked: bool = False, **kwargs):
        """transformers' `from_pretrained` at the saved geometry, after the size check, with
        offloaded blocks regrouped and the fixed parameters frozen again."""
        if not _sizes_checked:
            cls._check_sizes_fit_weights(pretrained_model_name_or_path, kwargs, {})
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if kwargs.get("output_loading_info") else loaded
        if getattr(model, "hf_device_map", None):
            offload_whole_blocks(model)
        frozen = getattr(model, "_frozen_parameter_names", frozenset())
        for name, parameter in model.named_parameters():
            if name in frozen:
                parameter.requires_grad_(False)
        return loaded

    def prepare_for_finetuning(self) -> "MIMPreTrainedModel":
        """Switch a model just loaded from a pre-trained checkpoint to its method's fine-tuning
        layout, in place, keeping what it computes; returns self. `mim-hub finetune` (and
        `training.finetune.finetune`) calls it on every classifier before training; calling it
        again changes nothing. Here: nothing to do (a method with a fine-tuning layout of its own,
        e.g. SimMIM's ViT with a relative position table per block, overrides it)."""
        return self

    @classmethod
    def _check_sizes_fit_weights(cls, pretrained_model_name_or_path, kwargs: dict, requested: dict) -> None:
        """Before anything is built: a local folder's config (with the overrides asked for) must
        not ask for a model absurdly larger than its weights file (see `models/size_bounds.py`)."""
        if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            return
        folder = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        if not os.path.isdir(folder):
            return
        given = kwargs.get("config")
        if isinstance(given, PreTrainedConfig):
            config = copy.deepcopy(given)
        else:
            config = cls.config_class.from_pretrained(os.fspath(pretrained_model_name_or_path), **hub_kwargs(kwargs))
        rules = getattr(cls.config_class, "FIELD_RULES", {})
        for field, value in {**{k: v for k, v in kwargs.items() if k in rules}, **requested}.items():
            setattr(config, field, value)
        check_config_fits_weights(config, folder, pretraining="PreTraining" in cls.__name__ or "MaskedImageModeling" in cls.__name__)

    def _at_geometry(self, changes: dict, source: str, model_args=(), init_kwargs=None):
        """A model like this one at another geometry (`changes`: config fields), holding this
        one's weights (moved, not copied: this one is spent) with its position tables resized.

        The new model is built on the meta device; what the weights do not hold (fixed sin-cos
        tables, non-persistent buffers such as relative position indices) is computed by
        `_init_weights` for its own geometry, on the weights' device, before the weights are
        assigned."""
        config = type(self.config).from_dict({**self.config.to_dict(), **changes})
        with torch.device("meta"):
            resized = type(self)(config, *model_args, **(init_kwargs or {}))
        state = adapt_geometry(self.state_dict(), resized, source=source, old_model=self)
        tensors = dict(resized.named_parameters(remove_duplicate=False))
        tensors.update(resized.named_buffers(remove_duplicate=False))
        owners = sorted({name.rpartition(".")[0] for name in tensors if name not in state})
        for owner_name in owners:  # materialise and compute what the weights do not give
            owner = resized.get_submodule(owner_name)
            owner.to_empty(device=self.device, recurse=False)
            resized._init_weights(owner)
        missing, unexpected = resized.load_state_dict(state, strict=False, assign=True)
        left = [name for name, t in itertools.chain(resized.named_parameters(), resized.named_buffers()) if t.is_meta]
        if unexpected or left or set(missing) - set(tensors):
            raise RuntimeError(f"{source}: loading at {changes} left {left or missing} unset and {unexpected} unused")
        resized.to(self.dtype)
        resized.config._name_or_path = self.config._name_or_path
        return resized.train(self.training)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: biases, norms, embeddings, layer scales."""
        names = set()
        for name, param in self.named_parameters():
            if param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in _NO_DECAY_NAMES):
                names.add(name)
        return names

    def num_layers_for_decay(self) -> int:
        """Blocks in the encoder, + 1 for the embeddings and + 1 for the head (BEiT/MAE rule)."""
        return self.config.num_hidden_layers + 1

    _layer_pattern = re.compile(r"(?:^|\.)(?:layers|blocks)\.(\d+)\.")

    def layer_id(self, name: str) -> int:
        """Layer index of a parameter for layer-wise lr decay: 0 for embeddings, i + 1 for block i,
        `num_layers_for_decay()` for everything after the encoder (final norm, head)."""
        if any(key in name for key in ("patch_embed", "pos_embed", "cls_token", "mask_token", "embeddings")):
            return 0
        match = self._layer_pattern.search(name)
        if match and not name.startswith("decoder"):
            return int(match.group(1)) + 1
        return self.num_layers_for_decay()

    @torch.no_grad()
    def _init_weights(self, module):
        """MAE's init: xavier-uniform Linear (and patch projection as a Linear), zero biases,
        unit LayerNorm; subclasses add their embeddings and tokens."""
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.xavier_uniform_flat_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        # Non-persistent buffers are not in the weights file: from_pretrained builds the model on
        # the meta device and leaves them uninitialised unless they are computed here.
        if isinstance(module, Attention) and module.qkv_bias_mode == "qv":
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
            init.zeros_(module.k_bias)
        elif isinstance(module, RelativePositionBias):
            init.copy_(module.relative_position_index, relative_position_index(module.window_size, module.cls_token))


class ImageClassifierForwardMixin(ClassifierFeaturesMixin):
    """The classifiers' forward, shared by every method whose classifier is its base model's
    pooled output (`pooler_output`) through `self.head`: put it before the method's
    PreTrainedModel in the bases. (The timm-style hooks come with it: `ClassifierFeaturesMixin`.)"""

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        encoded = getattr(self, self.base_model_prefix)(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.head(encoded.pooler_output)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        # (a CNN's output has no attentions)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=getattr(encoded, "attentions", None))
