"""Checkpoint formats of public chest X-ray pretraining methods -> torchvision ResNet trunk weights.

Each format knows where its method keeps the image encoder's ResNet in a released checkpoint, which other
keys belong to the image encoder (projection heads, poolers: ignored and counted), which belong elsewhere
(text encoder, alignment and loss modules: ignored and counted), and which input convention the method
trained with. Anything under the image encoder that fits none of these is an error listing the keys: a
silently dropped stage would make every number downstream wrong.

The key layouts were read off the methods' public code; each converter cites the file (``repo:path``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from benchmark.backbones.errors import FormatError, UnmappedKeysError
from cxrcore.keys import STRIP_PREFIXES, normalize_keys  # noqa: F401  (STRIP_PREFIXES: benchmark.backbones)

TRUNK = re.compile(r"^(conv1|bn1|layer[1-4])\.")


@dataclass(frozen=True)
class InputNorm:
    """An input convention: per-channel mean / std applied to a 3-channel image on [0, 1]."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std), "source": self.source}


# Named conventions a spec can ask for (``SPEC#norm=NAME``); ``task`` is the protocol's default.
NAMED_NORMS = {
    "imagenet": InputNorm(
        "imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "ImageNet statistics (torchvision)"
    ),
    "half": InputNorm("half", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "(x - 0.5) / 0.5, i.e. [-1, 1]"),
    "unit": InputNorm("unit", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "[0, 1], no mean/std normalisation"),
}


@dataclass
class Conversion:
    """The outcome of converting a checkpoint: torchvision ResNet trunk keys, plus the accounting."""

    format: str
    state: dict[str, torch.Tensor]  # torchvision ResNet keys (conv1, bn1, layer1..layer4)
    prefix: str = ""  # where the trunk was found in the file
    num_stages: int = 4  # 3: the method's encoder ends at layer3 (C4)
    ignored: dict[str, list[str]] = field(default_factory=dict)  # reason -> keys
    unmapped: list[str] = field(default_factory=list)  # image-encoder keys that fit no rule
    # "resnet": ``state`` has torchvision ResNet keys; "vit": timm VisionTransformer keys; "swin-hf":
    # Hugging Face transformers SwinModel keys (benchmark.backbones.transformer_models builds the last two)
    family: str = "resnet"
    hints: dict = field(default_factory=dict)  # what the keys cannot tell (heads, activation, LayerNorm eps)

    @property
    def mapped(self) -> int:
        return len(self.state)

    def summary(self) -> dict:
        """Counts for records and messages (no tensors)."""
        return {
            "format": self.format,
            "prefix": self.prefix,
            "mapped": self.mapped,
            "num_stages": self.num_stages,
            "ignored": {reason: len(keys) for reason, keys in self.ignored.items()},
        } | ({"family": self.family} if self.family != "resnet" else {})

    def describe(self) -> str:
        ignored = ", ".join(f"{len(k)} {reason}" for reason, k in self.ignored.items()) or "none"
        where = f" under '{self.prefix}'" if self.prefix else ""
        return f"mapped {self.mapped} image-encoder keys{where}; ignored {ignored}"


@dataclass(frozen=True)
class CheckpointFormat:
    """A released checkpoint layout: how to find, convert and describe its image encoder."""

    name: str
    title: str
    methods: str
    files: str  # what the released files look like
    source: str  # repo:path of the code that defines the layout
    detect: Callable[[Iterable[str]], str | None]  # -> trunk prefix, or None
    convert: Callable[[Mapping[str, torch.Tensor], str], Conversion]
    example: str
    normalization: InputNorm | None = None  # None: the protocol's task statistics
    expected: str = ""  # an example key, for error messages
    resolution: int = 224  # the input side the method trained its encoder at


def show_keys(keys: list[str], n: int = 12) -> str:
    head = ", ".join(keys[:n])
    return f"{head}, ... ({len(keys)} in all)" if len(keys) > n else head or "none"


def _find_prefix(keys: Iterable[str], marker: str, probe: str = "layer1.0.conv1.weight") -> str | None:
    """The (unique, shortest) prefix P ending in ``marker`` such that ``P + probe`` is a key."""
    rx = re.compile(rf"^((?:.*\.)?{marker})" + re.escape(probe) + "$")
    found = sorted({m.group(1) for k in keys if (m := rx.match(k))}, key=len)
    return found[0] if found else None


def _split(
    state: Mapping[str, torch.Tensor],
    fmt: str,
    trunk_prefix: str,
    encoder_prefix: str,
    encoder_extras: Mapping[str, str],
    outside: Mapping[str, str],
    rename: Callable[[str], str | None] | None = None,
    default_outside: str = "keys of other modules",
    valid: re.Pattern = TRUNK,
) -> Conversion:
    """Sort a checkpoint's keys into trunk / ignored / unmapped.

    Args:
        trunk_prefix: keys starting here are the ResNet (stripped; ``rename`` maps what remains).
        encoder_prefix: the image encoder's own prefix (contains ``trunk_prefix``).
        encoder_extras: sub-prefixes of the image encoder that are knowingly ignored -> reason.
        outside: regexes for keys outside the image encoder -> reason (first match wins).
        valid: what a renamed trunk key must look like (torchvision ResNet keys by default).
    """
    conv = Conversion(fmt, {}, prefix=trunk_prefix)

    def ignore(reason: str, key: str) -> None:
        conv.ignored.setdefault(reason, []).append(key)

    def extra(key: str) -> str | None:
        rest = key[len(encoder_prefix) :]
        return next((r for p, r in encoder_extras.items() if rest.startswith(p)), None)

    for key, value in state.items():
        if key.startswith(encoder_prefix) and (reason := extra(key)) is not None:
            ignore(reason, key)  # knowingly ignored parts of the image encoder (heads, MAE decoder, ...)
        elif key.startswith(trunk_prefix):
            rest = key[len(trunk_prefix) :]
            if valid is TRUNK and rest.startswith("fc."):  # the ImageNet classifier some methods keep
                ignore("classifier (fc) keys", key)
                continue
            new = rename(rest) if rename else rest
            if new is None or not valid.match(new):
                conv.unmapped.append(key)
            else:
                conv.state[new] = value
        elif key.startswith(encoder_prefix):
            conv.unmapped.append(key)
        else:
            reason = next((r for p, r in outside.items() if re.match(p, key)), default_outside)
            ignore(reason, key)
    return conv


# ----------------------------------------------------------------------------------------------------------
# torchvision / timm ResNet layout (also LoVT's exported backbone_weights.pt and cxrbench's pretrain export)


def _detect_torchvision(keys: Iterable[str]) -> str | None:
    keys = set(normalize_keys(dict.fromkeys(keys, None)))
    return "" if {"conv1.weight", "layer1.0.conv1.weight"} <= keys else None


def _convert_torchvision(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # torchvision/models/resnet.py (pytorch/vision) and timm/models/resnet.py (huggingface/pytorch-image-models)
    # share the key names conv1, bn1, layer1..layer4 (downsample.0/1), fc; LoVT saves exactly
    # `torch.save(backbone_model.state_dict(), 'backbone_weights.pt')` (philip-mueller/lovt:
    # src/baselines/baseline_utils.py, export_pretrained_weights).
    norm = normalize_keys(state)
    conv = Conversion("torchvision", {}, prefix="")
    for k, v in norm.items():
        if k.startswith("fc."):
            conv.ignored.setdefault("classifier (fc) keys", []).append(k)
        else:
            conv.state[k] = v  # anything else is checked against the architecture by check_and_load
    # always the whole ResNet: a file without layer4 is reported with its missing keys (only formats whose
    # encoder really ends at layer3, MedKLIP, have three stages)
    conv.num_stages = 4
    return conv


# ----------------------------------------------------------------------------------------------------------
# LoVT / ConVIRT / CLIP (LoVT's code): Lightning checkpoint of BiModalModelRepresentationLearner


def _detect_lovt(keys: Iterable[str]) -> str | None:
    return _find_prefix(keys, r"encoder\.feature_extractor\.backbone_layers\.")


def _convert_lovt(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # philip-mueller/lovt: src/models/pretraining/bimodal_alignment_model.py - the LightningModule holds
    # model_a / model_b = ModalityModel(encoder, project_local, project_global), ll_attention, loss_module;
    # src/models/image/scan_encoder.py - ScanEncoderModel.feature_extractor (+ global_aggregator,
    # region_pos_embeddings); src/models/image/resnet.py - ResNetFeatureExtractor.backbone_layers =
    # ModuleDict(conv1, bn1, relu, maxpool, layer1..layer4) of a torchvision ResNet.
    encoder_prefix = prefix[: -len("feature_extractor.backbone_layers.")]  # e.g. model_a.encoder.
    modality = encoder_prefix[: -len("encoder.")]  # e.g. model_a.
    outside = {re.escape(modality) + r"project_(local|global)\.": "projection-head keys"}
    m = re.fullmatch(r"(.*)model_([ab])\.", modality)
    if m:  # the other modality model is the report encoder
        other = f"{m.group(1)}model_{'b' if m.group(2) == 'a' else 'a'}."
        outside[re.escape(other)] = "report (text) encoder keys"
    outside[r"(.*\.)?(ll_attention|loss_module|lweights_a|lweights_b)\."] = "alignment / loss keys"
    return _split(
        state,
        "lovt",
        prefix,
        encoder_prefix,
        {
            "global_aggregator.": "global aggregator keys (attention pooling for the global embedding)",
            "region_pos_embeddings": "region positional-embedding keys",
        },
        outside,
    )


# ----------------------------------------------------------------------------------------------------------
# GLoRIA: Lightning checkpoint of PretrainModel (self.gloria = GLoRIA(img_encoder, text_encoder))


def _detect_gloria(keys: Iterable[str]) -> str | None:
    return _find_prefix(keys, r"img_encoder\.model\.")


def _convert_gloria(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # marshuang80/gloria: gloria/lightning/pretrain_model.py (PretrainModel.gloria),
    # gloria/models/gloria_model.py (GLoRIA.img_encoder / .text_encoder), gloria/models/vision_model.py
    # (ImageEncoder.model = torchvision ResNet with fc = Identity, .global_embedder, .local_embedder),
    # gloria/models/cnn_backbones.py (resnet_50); gloria/gloria.py strips 'gloria.' the same way.
    encoder_prefix = prefix[: -len("model.")]
    return _split(
        state,
        "gloria",
        prefix,
        encoder_prefix,
        {"global_embedder.": "projection-head keys", "local_embedder.": "projection-head keys"},
        {r"(.*\.)?text_encoder\.": "text encoder keys"},
    )


# ----------------------------------------------------------------------------------------------------------
# MGCA (ResNet-50 variant): Lightning checkpoint of MGCA


def _detect_mgca(keys: Iterable[str]) -> str | None:
    return _find_prefix(keys, r"img_encoder_q\.model\.")


def _convert_mgca(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # HKU-MedAI/MGCA: mgca/models/mgca/mgca_module.py (MGCA.img_encoder_q / text_encoder_q /
    # patch_local_atten_layer / word_local_atten_layer / prototype_layer), mgca/models/backbones/encoder.py
    # (ImageEncoder.model = torchvision ResNet-50 with fc = Identity, .global_embed, .local_embed);
    # mgca/models/mgca/mgca_detector.py loads exactly the keys starting with 'img_encoder_q.model'.
    encoder_prefix = prefix[: -len("model.")]
    return _split(
        state,
        "mgca",
        prefix,
        encoder_prefix,
        {"global_embed.": "projection-head keys", "local_embed.": "projection-head keys"},
        {
            r"(.*\.)?text_encoder_q\.": "text encoder keys",
            r"(.*\.)?(patch_local_atten_layer|word_local_atten_layer|prototype_layer)\.": "alignment / prototype keys",
        },
    )


# ----------------------------------------------------------------------------------------------------------
# BioViL and BioViL-T (microsoft/hi-ml, health_multimodal): state dict of ImageModel


def _detect_biovil_any(keys: Iterable[str]) -> str | None:
    return _find_prefix(keys, r"encoder\.encoder\.")


def _is_biovil_t(keys: Iterable[str], prefix: str) -> bool:
    encoder_prefix = prefix[: -len("encoder.")]
    return any(k.startswith(encoder_prefix + "vit_pooler.") for k in keys)


def _detect_biovil(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    prefix = _detect_biovil_any(keys)
    return prefix if prefix is not None and not _is_biovil_t(keys, prefix) else None


def _detect_biovil_t(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    prefix = _detect_biovil_any(keys)
    return prefix if prefix is not None and _is_biovil_t(keys, prefix) else None


_BIOVIL_OUTSIDE = {
    r"(.*\.)?projector\.": "projection-head keys",
    r"(.*\.)?classifier\.": "downstream classifier keys",
}


def _convert_biovil(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # microsoft/hi-ml: hi-ml-multimodal/src/health_multimodal/image/model/model.py (ImageModel.encoder =
    # ImageEncoder, .projector = MLP, optional .classifier; ImageEncoder.encoder = ResNetHIML) and
    # image/model/resnet.py (ResNetHIML subclasses torchvision's ResNet: same keys, fc included);
    # released as biovil_image_resnet50_proj_size_128.pt (image/model/pretrained.py).
    return _split(state, "biovil", prefix, prefix[: -len("encoder.")], {}, _BIOVIL_OUTSIDE)


def _convert_biovil_t(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # microsoft/hi-ml: hi-ml-multimodal/src/health_multimodal/image/model/encoder.py (MultiImageEncoder adds
    # backbone_to_vit, vit_pooler (VisionTransformerPooler) and missing_previous_emb on top of the ResNet-50's
    # C5 to fuse a prior image); released as biovil_t_image_model_proj_size_128.pt (model/pretrained.py).
    # The temporal pooler works on C5 only and is not part of the dense trunk the heads read.
    temporal = "temporal-fusion keys (multi-image ViT pooler on C5)"
    return _split(
        state,
        "biovil-t",
        prefix,
        prefix[: -len("encoder.")],
        {"backbone_to_vit.": temporal, "vit_pooler.": temporal, "missing_previous_emb": temporal},
        _BIOVIL_OUTSIDE,
    )


# ----------------------------------------------------------------------------------------------------------
# MedKLIP: {'model': DataParallel(MedKLIP).state_dict(), 'optimizer', ...}

# nn.Sequential(*list(resnet.children())[:-3]): conv1, bn1, relu, maxpool, layer1, layer2, layer3;
# the downstream ModelRes_ft keeps children()[:-1], which adds layer4 at index 7.
_MEDKLIP_INDEX = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _detect_medklip(keys: Iterable[str]) -> str | None:
    return _find_prefix(keys, r"res_features\.", probe="4.0.conv1.weight")


def _rename_medklip(rest: str) -> str | None:
    index, _, tail = rest.partition(".")
    return f"{_MEDKLIP_INDEX[index]}.{tail}" if index in _MEDKLIP_INDEX and tail else None


def _convert_medklip(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # MediaBrain-SJTU/MedKLIP: PreTrain_MedKLIP/models/model_MedKLIP.py (MedKLIP.res_features =
    # nn.Sequential(*list(resnet.children())[:-3]) - the encoder ends at layer3, 1024 channels at stride 16 -
    # then res_l1 / res_l2 project the patches; disease_embedding_layer, cl_fc, decoder, classifier form the
    # query decoder); PreTrain_MedKLIP/train_MedKLIP.py saves {'model': nn.DataParallel(model).state_dict(),
    # 'optimizer', 'lr_scheduler', 'config', 'epoch'} (keys start with 'module.');
    # Sample_Finetuning_SIIMACR/I1_classification/models/resnet.py (ModelRes_ft keeps layer4 as index 7).
    model_prefix = prefix[: -len("res_features.")]
    conv = _split(
        state,
        "medklip",
        prefix,
        model_prefix + "res_",
        {"l1.": "patch projection keys", "l2.": "patch projection keys", "out.": "classifier keys"},
        {
            re.escape(model_prefix)
            + r"(disease_embedding_layer|cl_fc|decoder|classifier)\.": "query-decoder / classifier keys"
        },
        rename=_rename_medklip,
    )
    conv.num_stages = 4 if any(k.startswith("layer4.") for k in conv.state) else 3
    return conv


# ----------------------------------------------------------------------------------------------------------
# OpenMMLab (mmpretrain / mmselfsup / mmdet / mmseg): checkpoint['state_dict'] with backbone.*


def _detect_mmpretrain(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    prefix = _find_prefix(keys, r"backbone\.")
    if prefix is None and any(re.match(r"^(.*\.)?backbone\.stem\.0\.conv\.weight$", k) for k in keys):
        raise FormatError(
            "this OpenMMLab checkpoint has a deep-stem ResNet (ResNetV1c / ResNetV1d: backbone.stem.*), which "
            "is not the torchvision ResNet layout. Use the matching timm model instead, e.g. "
            "timm:resnet50d:FILE after converting the keys, or export a plain ResNet."
        )
    return prefix


def _convert_mmpretrain(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # open-mmlab/mmpretrain: mmpretrain/models/backbones/resnet.py - ResNet (style='pytorch', deep_stem=False)
    # names its modules conv1, bn1 (build_norm_layer(..., postfix=1)), layer1..layer4 of Bottleneck/BasicBlock
    # with conv1-3, bn1-3, downsample.0 / .1: the torchvision names under 'backbone.'. Classifiers put 'head.',
    # self-supervised models 'neck.' / 'head.' / a momentum copy next to it.
    return _split(
        state,
        "mmpretrain",
        prefix,
        prefix,
        {},
        {
            r"(.*\.)?(head|neck|bbox_head|decode_head|auxiliary_head)\.": "neck / head keys",
            r"(.*\.)?data_preprocessor\.": "data-preprocessor buffers",
            r"(.*\.)?(momentum_encoder|target_net|teacher|ema_model|target_backbone)\.": "momentum / target encoder copy keys",
        },
    )


# ----------------------------------------------------------------------------------------------------------
# Transformers: plain ViTs are converted to timm's VisionTransformer keys (family "vit"), Swin keeps the
# Hugging Face transformers SwinModel keys (family "swin-hf"); benchmark.backbones.transformer_models builds both.

# timm/models/vision_transformer.py (huggingface/pytorch-image-models): VisionTransformer's own keys
VIT_KEY = re.compile(
    r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm_pre\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)|blocks\.\d+\.ls[12]\.gamma)$"
)
# transformers/models/swin/modeling_swin.py (huggingface/transformers): SwinModel's keys as released
# (transformers 4.x, e.g. MedCLIP's pytorch_model.bin); the canonical layout of family "swin-hf"
SWIN_KEY = re.compile(
    r"^(embeddings\.(patch_embeddings\.projection|norm)\.(weight|bias)|layernorm\.(weight|bias)"
    r"|encoder\.layers\.\d+\.downsample\.(reduction\.weight|norm\.(weight|bias))"
    r"|encoder\.layers\.\d+\.blocks\.\d+\.(layernorm_before|layernorm_after|attention\.self\.(query|key|value)"
    r"|attention\.output\.dense|intermediate\.dense|output\.dense)\.(weight|bias)"
    r"|encoder\.layers\.\d+\.blocks\.\d+\.attention\.self\.relative_position_bias_table)$"
)
# transformers 5 renamed them (transformers/conversion_mapping.py, entry "swin": released name -> new name);
# files saved by transformers >= 5 are read back to the released names
SWIN_RENAMES = (
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.self.query", "attention.q_proj"),
    ("attention.self.key", "attention.k_proj"),
    ("attention.self.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def swin_to_released(rest: str) -> str:
    for released, new in SWIN_RENAMES:
        if f".{new}." in f".{rest}.":
            return rest.replace(new, released)
    return rest


def swin_to_new(rest: str) -> str:
    for released, new in SWIN_RENAMES:
        if f".{released}." in f".{rest}.":
            return rest.replace(released, new)
    return rest


# Keys of CLIP-style text towers and the contrastive temperature (open_clip / OpenAI CLIP layouts).
_CLIP_OUTSIDE = {
    r"(.*\.)?(text\.|transformer\.|token_embedding\.|positional_embedding$|ln_final\.|text_projection|attn_mask$)": "text encoder keys",
    r"(.*\.)?logit_(scale|bias)$": "logit scale / bias",
    r"(.*\.)?(input_resolution|context_length|vocab_size)$": "metadata entries (OpenAI CLIP)",
}


def _vit_conversion(conv: Conversion, **hints) -> Conversion:
    conv.family = "vit"
    conv.hints = hints
    return conv


# -- BiomedCLIP (open_clip: CLIP(vision = TimmModel(trunk = timm ViT-B/16), text = HFTextEncoder))


def _detect_biomedclip(keys: Iterable[str]) -> str | None:
    return _find_prefix(keys, r"visual\.trunk\.", probe="blocks.0.attn.qkv.weight")


def _convert_biomedclip(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # mlfoundations/open_clip: src/open_clip/timm_model.py (TimmModel.trunk = timm.create_model(
    # 'vit_base_patch16_224', num_classes=0, global_pool=''), TimmModel.head = Sequential(proj=Linear)),
    # src/open_clip/model.py (CLIP.visual / .text / .logit_scale), src/open_clip/hf_model.py (HFTextEncoder:
    # text.transformer.*, text.proj.*); the BiomedCLIP hub folder's open_clip_config.json names that trunk.
    visual = prefix[: -len("trunk.")]
    conv = _split(
        state, "biomedclip", prefix, visual, {"head.": "projection-head keys"}, _CLIP_OUTSIDE, valid=VIT_KEY
    )
    return _vit_conversion(conv, act="gelu", eps=1e-6)


# -- CheXzero (OpenAI CLIP code: model.py CLIP.visual = VisionTransformer)

_OPENAI_RENAME = (
    (r"class_embedding", "cls_token"),
    (r"positional_embedding", "pos_embed"),
    (r"conv1\.weight", "patch_embed.proj.weight"),
    (r"ln_pre\.(weight|bias)", r"norm_pre.\1"),
    (r"ln_post\.(weight|bias)", r"norm.\1"),
    (r"transformer\.resblocks\.(\d+)\.ln_1\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"transformer\.resblocks\.(\d+)\.ln_2\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (r"transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
)


def _rename_table(table: tuple[tuple[str, str], ...]) -> Callable[[str], str | None]:
    compiled = [(re.compile(rf"^{a}$"), b) for a, b in table]

    def rename(rest: str) -> str | None:
        for rx, repl in compiled:
            if rx.match(rest):
                return rx.sub(repl, rest)
        return None

    return rename


def _detect_chexzero(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    prefix = _find_prefix(keys, r"visual\.", probe="transformer.resblocks.0.attn.in_proj_weight")
    return prefix if prefix is not None and prefix + "class_embedding" in set(keys) else None


def _convert_chexzero(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # rajpurkarlab/CheXzero: model.py (OpenAI's CLIP: VisionTransformer with conv1 (no bias), class_embedding,
    # positional_embedding, ln_pre, transformer.resblocks.N (ln_1, attn = nn.MultiheadAttention in_proj /
    # out_proj, ln_2, mlp.c_fc / c_proj with QuickGELU), ln_post, proj), zero_shot.py load_clip (ViT-B/32,
    # torch.save(model.state_dict())); timm's _convert_openai_clip (timm/models/vision_transformer.py)
    # maps the same names to timm's, with pre_norm=True and quick_gelu.
    conv = _split(
        state,
        "chexzero",
        prefix,
        prefix,
        {"proj": "projection-head keys"},
        _CLIP_OUTSIDE,
        rename=_rename_table(_OPENAI_RENAME),
        valid=VIT_KEY,
    )
    if "cls_token" in conv.state:
        conv.state["cls_token"] = conv.state["cls_token"].reshape(1, 1, -1)
    if "pos_embed" in conv.state:
        conv.state["pos_embed"] = conv.state["pos_embed"].unsqueeze(0)
    return _vit_conversion(conv, act="quick_gelu", eps=1e-5)


# -- RAD-DINO (Hugging Face transformers Dinov2Model)

_DINOV2_RENAME = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    # the same weights as saved by transformers >= 5 (transformers/conversion_mapping.py, "Dinov2Model")
    (r"encoder\.layer\.(\d+)\.attention\.q_proj\.(weight|bias)", r"blocks.\1.attn.query.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.k_proj\.(weight|bias)", r"blocks.\1.attn.key.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.v_proj\.(weight|bias)", r"blocks.\1.attn.value.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.o_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
)
_DINOV2_QKV = re.compile(r"^(blocks\.\d+\.attn\.)(query|key|value)\.(weight|bias)$")


def _detect_rad_dino(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    prefix = _find_prefix(keys, "", probe="encoder.layer.0.layer_scale1.lambda1")
    ok = prefix is not None and prefix + "embeddings.patch_embeddings.projection.weight" in set(keys)
    return prefix if ok else None


def _convert_rad_dino(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # huggingface/transformers: src/transformers/models/dinov2/modeling_dinov2.py (Dinov2Model: embeddings
    # (cls_token, mask_token, position_embeddings, patch_embeddings.projection), encoder.layer.N (norm1,
    # attention.attention.query / key / value, attention.output.dense, layer_scale1.lambda1, norm2, mlp.fc1 /
    # fc2, layer_scale2.lambda1), layernorm); microsoft/rad-dino on the Hugging Face Hub is such a folder
    # (config.json + model.safetensors). timm's vit_base_patch14_dinov2 holds the same weights with q / k / v
    # concatenated into attn.qkv.
    valid = re.compile(VIT_KEY.pattern[:-2] + r"|blocks\.\d+\.attn\.(query|key|value)\.(weight|bias))$")
    conv = _split(
        state,
        "rad-dino",
        prefix,
        prefix,
        {"embeddings.mask_token": "mask token (masked-image modelling only)"},
        {r"(.*\.)?(classifier|head)\.": "classifier keys"},
        rename=_rename_table(_DINOV2_RENAME),
        valid=valid,
    )
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for k in [k for k in conv.state if _DINOV2_QKV.match(k)]:
        block, which, kind = _DINOV2_QKV.match(k).groups()
        parts.setdefault((block, kind), {})[which] = conv.state.pop(k)
    for (block, kind), qkv in parts.items():
        if set(qkv) != {"query", "key", "value"}:
            conv.unmapped += [f"{prefix}(incomplete query/key/value of {block}{kind})"]
            continue
        conv.state[f"{block}qkv.{kind}"] = torch.cat([qkv["query"], qkv["key"], qkv["value"]])
    return _vit_conversion(conv, act="gelu", eps=1e-6)


# -- MRM (MAE-style encoder of timm 0.3.2 blocks at the top level of MRM(nn.Module))


def _detect_mrm(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    prefix = _find_prefix(keys, "", probe="blocks.0.attn.qkv.weight")
    ok = prefix is not None and prefix + "decoder_pred.weight" in set(keys)
    return prefix if ok else None


def _convert_mrm(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # RL4M/MRM-pytorch: model_mrm.py (MRM: patch_embed, cls_token, pos_embed (fixed sin-cos), blocks = timm
    # Block, norm; decoder_embed / mask_token / decoder_pos_embed / decoder_blocks / decoder_norm /
    # decoder_pred reconstruct masked patches; bert_encoder / bert_mlp decode the report), main_pretrain.py +
    # util/misc.py save_model ({'model': model_without_ddp.state_dict(), 'optimizer', 'epoch', ...}).
    mae = "MAE decoder keys (masked-patch reconstruction)"
    report = "report decoder keys (BERT on the image tokens)"
    conv = _split(
        state,
        "mrm",
        prefix,
        prefix,
        {"decoder_": mae, "mask_token": mae, "bert_encoder.": report, "bert_mlp.": report},
        {},
        valid=VIT_KEY,
    )
    return _vit_conversion(conv, act="gelu", eps=1e-6)


# -- MGCA with the vit_base image encoder


def _detect_mgca_vit(keys: Iterable[str]) -> str | None:
    return _find_prefix(keys, r"img_encoder_q\.model\.", probe="blocks.0.attn.qkv.weight")


def _convert_mgca_vit(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # HKU-MedAI/MGCA: mgca/models/backbones/encoder.py (ImageEncoder('vit_base'): self.model = create_vit(
    # 'base', 224), .global_embed, .local_embed), mgca/models/backbones/vits.py (VisionTransformer with
    # timm's PatchEmbed and timm-named Block: norm1, attn.qkv, attn.proj, norm2, mlp.fc1 / fc2, LayerNorm
    # eps 1e-6, GELU), mgca/models/mgca/mgca_module.py (the other modules of the Lightning checkpoint).
    conv = _split(
        state,
        "mgca-vit",
        prefix,
        prefix[: -len("model.")],
        {"global_embed.": "projection-head keys", "local_embed.": "projection-head keys"},
        {
            r"(.*\.)?text_encoder_q\.": "text encoder keys",
            r"(.*\.)?(patch_local_atten_layer|word_local_atten_layer|prototype_layer)\.": "alignment / prototype keys",
        },
        valid=VIT_KEY,
    )
    return _vit_conversion(conv, act="gelu", eps=1e-6)


# -- MedCLIP with the Swin-Tiny vision tower (Hugging Face transformers SwinModel)


def _detect_medclip_swin(keys: Iterable[str]) -> str | None:
    keys = list(keys)
    marker = r"vision_model\.model\."
    return _find_prefix(keys, marker, probe="encoder.layers.0.blocks.0.attention.self.query.weight") or (
        _find_prefix(keys, marker, probe="encoder.layers.0.blocks.0.attention.q_proj.weight")
    )


def _convert_medclip_swin(state: Mapping[str, torch.Tensor], prefix: str) -> Conversion:
    # RyanWangZf/MedCLIP: medclip/modeling_medclip.py (MedCLIPModel(vision_cls=MedCLIPVisionModelViT):
    # vision_model.model = AutoModel.from_pretrained('microsoft/swin-tiny-patch4-window7-224') (a SwinModel),
    # vision_model.projection_head, text_model (BERT + projection_head), logit_scale), medclip/constants.py
    # (VIT_TYPE, WEIGHTS_NAME = pytorch_model.bin, IMG_SIZE / IMG_MEAN / IMG_STD).
    conv = _split(
        state,
        "medclip-swin",
        prefix,
        prefix[: -len("model.")],
        {"projection_head.": "projection-head keys"},
        {r"(.*\.)?text_model\.": "text encoder keys", r"(.*\.)?logit_scale$": "logit scale / bias"},
        rename=lambda rest: None if rest.endswith("relative_position_index") else swin_to_released(rest),
        valid=SWIN_KEY,
    )
    # relative_position_index: a buffer computed from the window size (not a weight; transformers 5 no longer
    # saves it); the model builds its own
    derived = [k for k in conv.unmapped if k.endswith(".relative_position_index")]
    conv.unmapped = [k for k in conv.unmapped if k not in derived]
    if derived:
        conv.ignored["derived buffers (relative_position_index, rebuilt from the window size)"] = derived
    conv.family = "swin-hf"
    conv.hints = {"eps": 1e-5}
    return conv


def _fmt(
    name, title, methods, files, source, detect, convert, example, normalization=None, expected="", resolution=224
):
    return CheckpointFormat(
        name, title, methods, files, source, detect, convert, example, normalization, expected, resolution
    )


_GREY = "the grey image repeated to 3 channels"


_HALF = NAMED_NORMS["half"]
FORMATS: dict[str, CheckpointFormat] = {
    f.name: f
    for f in (
        _fmt(
            "lovt",
            "LoVT / ConVIRT / CLIP (LoVT's code)",
            "LoVT, and ConVIRT / CLIP as pre-trained with LoVT's code",
            "Lightning .ckpt of BiModalModelRepresentationLearner (checkpoints/last.ckpt)",
            "philip-mueller/lovt: src/models/pretraining/bimodal_alignment_model.py, "
            "src/models/image/scan_encoder.py, src/models/image/resnet.py",
            _detect_lovt,
            _convert_lovt,
            "lovt:LoVT_100/checkpoints/last.ckpt",
            None,  # LoVT normalises with the dataset's own statistics: the protocol
            "model_a.encoder.feature_extractor.backbone_layers.layer1.0.conv1.weight",
        ),
        _fmt(
            "gloria",
            "GLoRIA",
            "GLoRIA (ResNet-50 image encoder)",
            "Lightning .ckpt of PretrainModel (chexpert_resnet50.ckpt)",
            "marshuang80/gloria: gloria/lightning/pretrain_model.py, gloria/models/gloria_model.py, "
            "gloria/models/vision_model.py",
            _detect_gloria,
            _convert_gloria,
            "gloria:pretrained/chexpert_resnet50.ckpt",
            InputNorm(
                "gloria",
                _HALF.mean,
                _HALF.std,
                "marshuang80/gloria: gloria/builder.py build_transformation with transforms.norm 'half' "
                "(configs/pretrain/chexpert_gloria_pretrain_config.yaml)",
            ),
            "gloria.img_encoder.model.layer1.0.conv1.weight",
        ),
        _fmt(
            "mgca",
            "MGCA (ResNet-50)",
            "MGCA with the resnet_50 image encoder",
            "Lightning .ckpt of MGCA (resnet_50.ckpt)",
            "HKU-MedAI/MGCA: mgca/models/mgca/mgca_module.py, mgca/models/backbones/encoder.py",
            _detect_mgca,
            _convert_mgca,
            "mgca:checkpoints/mgca/resnet_50.ckpt",
            InputNorm(
                "mgca",
                _HALF.mean,
                _HALF.std,
                "HKU-MedAI/MGCA: mgca/datasets/transforms.py DataTransforms, Normalize((0.5,)*3, (0.5,)*3)",
            ),
            "img_encoder_q.model.layer1.0.conv1.weight",
        ),
        _fmt(
            "biovil-t",
            "BioViL-T",
            "BioViL-T image model (ResNet-50 + temporal ViT pooler)",
            "biovil_t_image_model_proj_size_128.pt (HF microsoft/BiomedVLP-BioViL-T), or that folder",
            "microsoft/hi-ml: hi-ml-multimodal/src/health_multimodal/image/model/encoder.py, model.py, pretrained.py",
            _detect_biovil_t,
            _convert_biovil_t,
            "biovil-t:BiomedVLP-BioViL-T/biovil_t_image_model_proj_size_128.pt",
            InputNorm(
                "biovil",
                (0.0, 0.0, 0.0),
                (1.0, 1.0, 1.0),
                "microsoft/hi-ml: hi-ml-multimodal/src/health_multimodal/image/data/transforms.py "
                "create_chest_xray_transform_for_inference (ToTensor, no Normalize: [0, 1])",
            ),
            "encoder.encoder.layer1.0.conv1.weight (+ encoder.vit_pooler.*)",
        ),
        _fmt(
            "biovil",
            "BioViL",
            "BioViL image model (ResNet-50)",
            "biovil_image_resnet50_proj_size_128.pt (HF microsoft/BiomedVLP-CXR-BERT-specialized), or that folder",
            "microsoft/hi-ml: hi-ml-multimodal/src/health_multimodal/image/model/model.py, resnet.py, pretrained.py",
            _detect_biovil,
            _convert_biovil,
            "biovil:BiomedVLP-CXR-BERT-specialized/biovil_image_resnet50_proj_size_128.pt",
            InputNorm(
                "biovil",
                (0.0, 0.0, 0.0),
                (1.0, 1.0, 1.0),
                "microsoft/hi-ml: hi-ml-multimodal/src/health_multimodal/image/data/transforms.py "
                "create_chest_xray_transform_for_inference (ToTensor, no Normalize: [0, 1])",
            ),
            "encoder.encoder.layer1.0.conv1.weight",
        ),
        _fmt(
            "medklip",
            "MedKLIP",
            "MedKLIP (ResNet-50 up to layer3), also its ModelRes_ft finetuning models",
            "checkpoint_final.pth / checkpoint_state.pth: {'model': DataParallel state dict, ...}",
            "MediaBrain-SJTU/MedKLIP: PreTrain_MedKLIP/models/model_MedKLIP.py, PreTrain_MedKLIP/train_MedKLIP.py",
            _detect_medklip,
            _convert_medklip,
            "medklip:MedKLIP/checkpoint_final.pth",
            InputNorm(
                "imagenet",
                NAMED_NORMS["imagenet"].mean,
                NAMED_NORMS["imagenet"].std,
                "MediaBrain-SJTU/MedKLIP: PreTrain_MedKLIP/dataset/dataset.py, Normalize(ImageNet mean, std)",
            ),
            "module.res_features.4.0.conv1.weight",
        ),
        _fmt(
            "rad-dino",
            "RAD-DINO (Hugging Face Dinov2)",
            "RAD-DINO (microsoft/rad-dino, ViT-B/14), or any transformers Dinov2Model folder",
            "Hugging Face folder: config.json + model.safetensors (Dinov2Model state dict)",
            "huggingface/transformers: src/transformers/models/dinov2/modeling_dinov2.py; "
            "microsoft/rad-dino (Hugging Face Hub): config.json, preprocessor_config.json",
            _detect_rad_dino,
            _convert_rad_dino,
            "rad-dino:rad-dino/",
            InputNorm(
                "rad-dino",
                (0.5307, 0.5307, 0.5307),
                (0.2583, 0.2583, 0.2583),
                "microsoft/rad-dino (Hugging Face Hub): preprocessor_config.json (BitImageProcessor: resize "
                "shortest edge 518, centre crop 518, image_mean 0.5307, image_std 0.2583); a folder's own "
                "preprocessor_config.json takes precedence",
            ),
            "embeddings.patch_embeddings.projection.weight + encoder.layer.0.layer_scale1.lambda1",
            518,
        ),
        _fmt(
            "biomedclip",
            "BiomedCLIP (open_clip, timm ViT-B/16 trunk)",
            "BiomedCLIP (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224), or any open_clip model "
            "with a timm ViT trunk",
            "open_clip_pytorch_model.bin (Hugging Face hub folder with open_clip_config.json), state dict of "
            "open_clip's CLIP",
            "mlfoundations/open_clip: src/open_clip/timm_model.py, src/open_clip/model.py, src/open_clip/hf_model.py",
            _detect_biomedclip,
            _convert_biomedclip,
            "biomedclip:BiomedCLIP-PubMedBERT_256-vit_base_patch16_224/",
            InputNorm(
                "openai-clip",
                (0.48145466, 0.4578275, 0.40821073),
                (0.26862954, 0.26130258, 0.27577711),
                "mlfoundations/open_clip: src/open_clip/constants.py OPENAI_DATASET_MEAN / STD, the "
                "preprocess_cfg of BiomedCLIP's open_clip_config.json (224 px, bicubic)",
            ),
            "visual.trunk.blocks.0.attn.qkv.weight",
        ),
        _fmt(
            "chexzero",
            "CheXzero (OpenAI CLIP layout, ViT-B/32)",
            "CheXzero, and other OpenAI-CLIP-layout ViT state dicts",
            "best_64_5e-05_original_22000_0.864.pt etc.: torch.save(CLIP.state_dict())",
            "rajpurkarlab/CheXzero: model.py, zero_shot.py (load_clip), train.py",
            _detect_chexzero,
            _convert_chexzero,
            "chexzero:CheXzero/best_64_5e-05_original_22000_0.864.pt",
            InputNorm(
                "chexzero",
                (101.48761 / 255,) * 3,
                (83.43944 / 255,) * 3,
                "rajpurkarlab/CheXzero: zero_shot.py / train.py Normalize((101.48761,)*3, (83.43944,)*3) on "
                f"0..255 pixels, {_GREY}, Resize(224, bicubic)",
            ),
            "visual.transformer.resblocks.0.attn.in_proj_weight",
        ),
        _fmt(
            "mrm",
            "MRM (timm ViT-B/16 of a MAE-style checkpoint)",
            "MRM (masked record modelling), pre-training checkpoint",
            "MRM.pth: {'model': MRM state dict, 'optimizer', 'epoch', 'scaler', 'args'}",
            "RL4M/MRM-pytorch: model_mrm.py, main_pretrain.py, util/misc.py",
            _detect_mrm,
            _convert_mrm,
            "mrm:MRM.pth",
            InputNorm(
                "mrm",
                (0.4978,) * 3,
                (0.2449,) * 3,
                f"RL4M/MRM-pytorch: main_pretrain.py Normalize(mean=[0.4978], std=[0.2449]) on {_GREY}; "
                "model_mrm.py resizes to 224 (bicubic) for the encoder",
            ),
            "blocks.0.attn.qkv.weight + decoder_pred.weight",
        ),
        _fmt(
            "mgca-vit",
            "MGCA (ViT-B/16)",
            "MGCA with the vit_base image encoder",
            "Lightning .ckpt of MGCA (vit_base.ckpt)",
            "HKU-MedAI/MGCA: mgca/models/backbones/encoder.py, mgca/models/backbones/vits.py, "
            "mgca/models/mgca/mgca_module.py",
            _detect_mgca_vit,
            _convert_mgca_vit,
            "mgca-vit:checkpoints/mgca/vit_base.ckpt",
            InputNorm(
                "mgca",
                _HALF.mean,
                _HALF.std,
                "HKU-MedAI/MGCA: mgca/datasets/transforms.py DataTransforms, Normalize((0.5,)*3, (0.5,)*3)",
            ),
            "img_encoder_q.model.blocks.0.attn.qkv.weight",
        ),
        _fmt(
            "medclip-swin",
            "MedCLIP (Swin-Tiny vision tower)",
            "MedCLIP with MedCLIPVisionModelViT (Hugging Face Swin-Tiny, patch 4, window 7)",
            "pytorch_model.bin of MedCLIPModel (the medclip-vit-pretrained folder)",
            "RyanWangZf/MedCLIP: medclip/modeling_medclip.py, medclip/constants.py; huggingface/transformers: "
            "src/transformers/models/swin/modeling_swin.py",
            _detect_medclip_swin,
            _convert_medclip_swin,
            "medclip-swin:medclip-vit-pretrained/pytorch_model.bin",
            InputNorm(
                "medclip",
                (0.5862785803043838,) * 3,
                (0.27950088968644304,) * 3,
                f"RyanWangZf/MedCLIP: medclip/constants.py IMG_MEAN / IMG_STD (one channel, {_GREY} by "
                "MedCLIPVisionModelViT), IMG_SIZE 224",
            ),
            "vision_model.model.encoder.layers.0.blocks.0.attention.self.query.weight",
        ),
        _fmt(
            "torchvision",
            "torchvision / timm ResNet state dict",
            "plain ResNet weights: torchvision, timm resnet18/34/50, LoVT's backbone_weights.pt, "
            "cxrbench pretrain exports",
            ".pt / .pth / .bin / .safetensors state dict, optionally in {'state_dict': ...}, with wrapper "
            "prefixes (module., backbone., encoder., ...)",
            "pytorch/vision: torchvision/models/resnet.py; huggingface/pytorch-image-models: timm/models/resnet.py; "
            "philip-mueller/lovt: src/baselines/baseline_utils.py",
            _detect_torchvision,
            _convert_torchvision,
            "path/to/resnet50.safetensors",
            None,
            "layer1.0.conv1.weight",
        ),
        _fmt(
            "mmpretrain",
            "OpenMMLab ResNet (mmpretrain / mmselfsup / mmdet / mmseg)",
            "any OpenMMLab model whose backbone is a ResNet (style='pytorch', no deep stem)",
            "mmengine checkpoint {'meta', 'state_dict': {'backbone.*', 'head.*' / 'neck.*'}, ...}",
            "open-mmlab/mmpretrain: mmpretrain/models/backbones/resnet.py",
            _detect_mmpretrain,
            _convert_mmpretrain,
            "mmpretrain:resnet50_8xb32_in1k_20210831-ea4938fc.pth",
            None,
            "backbone.layer1.0.conv1.weight",
        ),
    )
}
# Aliases accepted in specs.
FORMAT_ALIASES = {
    "convirt": "lovt",
    "clip": "lovt",
    "biovil_t": "biovil-t",
    "timm-resnet": "torchvision",
    "dinov2-hf": "rad-dino",
    "open-clip": "biomedclip",
    "openai-clip": "chexzero",
    "mgca_vit": "mgca-vit",
    "medclip": "medclip-swin",
}


def get_format(name: str) -> CheckpointFormat:
    key = FORMAT_ALIASES.get(name, name)
    if key not in FORMATS:
        raise FormatError(
            f"unknown checkpoint format '{name}'; known: {', '.join([*FORMATS, *FORMAT_ALIASES])}"
        )
    return FORMATS[key]


def detect_format(keys: Iterable[str]) -> tuple[CheckpointFormat, str] | None:
    """The first format (in registry order: specific layouts before the generic one) whose layout the keys have."""
    keys = list(keys)
    for fmt in FORMATS.values():
        prefix = fmt.detect(keys)
        if prefix is not None:
            return fmt, prefix
    return None


def convert(state: Mapping[str, torch.Tensor], source: str, format: str | None = None) -> Conversion:
    """Detect (or check) the format of ``state`` and convert its image encoder to torchvision ResNet keys.

    Raises:
        FormatError: the layout is not the given format's, or no known format's.
        UnmappedKeysError: image-encoder keys that no rule maps or knowingly ignores.
    """
    keys = list(state)
    if format is None:
        found = detect_format(keys)
        if found is None:
            raise FormatError(
                f"{source}: no known checkpoint layout recognised (first keys: {show_keys(sorted(keys), 8)}). "
                f"Known formats: {', '.join(FORMATS)} (see `cxrbench backbones`); for another model use "
                "timm:MODEL_NAME:FILE, or pass FORMAT:FILE to see what a format expects."
            )
        fmt, prefix = found
    else:
        fmt = get_format(format)
        prefix = fmt.detect(keys)
        if prefix is None:
            other = detect_format(keys)
            hint = f" It looks like a '{other[0].name}' checkpoint." if other else ""
            raise FormatError(
                f"{source}: not a {fmt.title} checkpoint: expected keys like '{fmt.expected}', found "
                f"{show_keys(sorted(keys), 8)}.{hint}"
            )
    conv = fmt.convert(state, prefix)
    if conv.unmapped:
        raise UnmappedKeysError(
            f"{source}: recognised a {fmt.title} checkpoint, but {len(conv.unmapped)} key(s) of its image "
            f"encoder map to nothing cxrbench knows: {show_keys(sorted(conv.unmapped))}. Refusing to drop "
            "them silently; if the file is a variant of this format, please report it with these keys."
        )
    return conv
