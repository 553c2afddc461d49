"""Small checkpoints of the transformer-generation CXR encoders, built with each method's public model code.

Where the method's model code is installable (open_clip for BiomedCLIP and the OpenAI-CLIP layout of
CheXzero, transformers for RAD-DINO's Dinov2 and MedCLIP's Swin) the checkpoint is that code's own
``state_dict()``; MRM and MGCA are not packaged, so their modules are rebuilt here from timm's PatchEmbed /
Block exactly as their files do (cited). Every builder returns ``(what to save, reference)`` where
``reference(x)`` gives the original module's features for a 3-channel input:

- ViTs: the last block's patch tokens after the final LayerNorm, as a ``(B, D, H/p, W/p)`` map;
- Swin: ``{2: stage 1, 3: stage 2, 4: stage 3, 5: last_hidden_state}`` as maps.

Configurations are tiny (two blocks, 64..128 wide) so that the tests run in seconds; every parameter is
jittered so that a wrong mapping (a swapped LayerNorm, q / k / v in the wrong order) cannot go unnoticed.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from torch import nn


def jitter(module: nn.Module, seed: int = 0) -> nn.Module:
    """Add noise to every parameter (LayerNorms at 1 / 0 and zero biases would hide a wrong mapping)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


def released_layout(state: dict, mapping: str, relative_index: dict | None = None) -> dict:
    """The key names of the files as released (transformers 4.x), from transformers' own table of renames.

    transformers >= 5 renamed the attention / MLP modules of Dinov2 and Swin; it reads released files through
    ``conversion_mapping.get_checkpoint_conversion_mapping(NAME)`` (old -> new names). Inverting that table
    gives back the released names; on transformers 4.x there is no table and the names are already those.
    ``relative_index``: Swin's relative_position_index buffers, which 4.x also saved.
    """
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:  # transformers 4.x
        return dict(state)
    rules = [
        (r.source_patterns[0], r.target_patterns[0])
        for r in get_checkpoint_conversion_mapping(mapping) or []
        if type(r).__name__ == "WeightRenaming"
    ]
    out = {}
    for key, value in state.items():
        for old, new in rules:
            if f".{new}." in f".{key}.":
                key = key.replace(new, old)
                break
        out[key] = value
    return out | (relative_index or {})


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


# -- RAD-DINO: transformers Dinov2Model, saved as a Hugging Face folder


def dinov2_config(image_size: int = 56):
    from transformers import Dinov2Config

    # RAD-DINO is ViT-B/14 at 518 px (12 heads of 64); here 2 heads of 32, so the folder's config.json must
    # be read for the head count
    return Dinov2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=4,
        image_size=image_size,
        patch_size=14,
        layerscale_value=0.5,
    )


def make_rad_dino(folder, image_size: int = 56, seed: int = 0, released: bool = True):
    """A Dinov2Model folder; ``released``: with the key names of the Hub's files (transformers 4.x)."""
    from safetensors.torch import save_file
    from transformers import Dinov2Model

    torch.manual_seed(seed)
    model = jitter(Dinov2Model(dinov2_config(image_size)), seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(str(folder / "config.json"))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(released_layout(state, "Dinov2Model") if released else state, str(folder / "model.safetensors"))

    def reference(x):
        with torch.no_grad():
            out = model(pixel_values=x).last_hidden_state[:, 1:]
        return tokens_to_map(out, (x.shape[-2] // 14, x.shape[-1] // 14))

    return model, reference


# -- BiomedCLIP: open_clip CustomTextCLIP with a timm ViT trunk and a Hugging Face BERT text tower


def make_biomedclip(seed: int = 0):
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
    from transformers import BertConfig

    torch.manual_seed(seed)
    # BiomedCLIP's open_clip_config.json: timm_model_name vit_base_patch16_224, timm_pool "", timm_proj
    # "linear", hf_proj_type "mlp", hf_pooler_type "cls_last_hidden_state_pooler"; here ViT-Ti/16 at 64 px
    vision = CLIPVisionCfg(
        timm_model_name="vit_tiny_patch16_224",
        timm_model_pretrained=False,
        timm_pool="",
        timm_proj="linear",
        image_size=64,
    )
    model = CustomTextCLIP(embed_dim=16, vision_cfg=vision, text_cfg=CLIPTextCfg(width=32, heads=2, layers=1))
    bert = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model.text = HFTextEncoder(
        "PubMedBERT (tiny)",
        output_dim=16,
        config=bert,
        pretrained=False,
        proj_type="mlp",
        pooler_type="cls_last_hidden_state_pooler",
    )
    jitter(model, seed)
    trunk = model.visual.trunk

    def reference(x):
        with torch.no_grad():
            out = trunk.forward_features(x)[:, trunk.num_prefix_tokens :]
        return tokens_to_map(out, (x.shape[-2] // 16, x.shape[-1] // 16))

    return model.state_dict(), reference


# -- CheXzero: OpenAI CLIP (open_clip's CLIP is OpenAI's layout: build_model_from_openai_state_dict loads it)


def make_chexzero(seed: int = 0):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    # CheXzero: ViT-B/32 (width 768, 12 layers) at 224 with QuickGELU; here width 128 (2 heads), 2 layers
    model = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=128, patch_size=32, image_size=64),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1),
        quick_gelu=True,
    )
    jitter(model, seed)
    visual = model.visual
    visual.output_tokens = True

    def reference(x):
        with torch.no_grad():
            _, tokens = visual(x)  # after ln_post, class token removed
        return tokens_to_map(tokens, (x.shape[-2] // 32, x.shape[-1] // 32))

    return model.state_dict(), reference


# -- MRM: RL4M/MRM-pytorch model_mrm.py (MRM), rebuilt from timm's PatchEmbed / Block as that file does


class MRMMirror(nn.Module):
    """model_mrm.MRM's module names and encoder forward; the BERT report decoder is a small stand-in."""

    def __init__(self, img_size=64, patch_size=16, embed_dim=128, depth=2, num_heads=2, decoder_embed_dim=32):
        super().__init__()
        from timm.models.vision_transformer import Block, PatchEmbed

        norm_layer = partial(nn.LayerNorm, eps=1e-6)  # mrm(): norm_layer=partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, 4.0, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)]
        )
        self.norm = norm_layer(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, 1, 4.0, qkv_bias=True, norm_layer=norm_layer)]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, (patch_size * 2) ** 2 * 3, bias=True)
        self.bert_encoder = nn.Module()  # bert/bert_encoder.py BertEncoder: a BertForMaskedLM underneath
        self.bert_encoder.model = nn.Linear(8, 8)
        self.bert_mlp = nn.Linear(embed_dim, 384, bias=True)

    def encode(self, x):
        """forward_encoder without the random masking (mask ratio 0 would still shuffle the tokens)."""
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def make_mrm(seed: int = 0):
    torch.manual_seed(seed)
    model = jitter(MRMMirror(), seed)
    # util/misc.py save_model: {'model': model_without_ddp.state_dict(), 'optimizer', 'epoch', 'scaler', 'args'}
    ckpt = {
        "model": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 199,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model="mrm", input_size=224, mask_ratio=0.75),
    }

    def reference(x):
        with torch.no_grad():
            out = model.encode(x)[:, 1:]
        return tokens_to_map(out, (x.shape[-2] // 16, x.shape[-1] // 16))

    return ckpt, reference


# -- MGCA (vit_base): HKU-MedAI/MGCA mgca/models/backbones/vits.py VisionTransformer, encoder.py ImageEncoder


class MGCAAttention(nn.Module):
    """vits.Attention: explicit softmax(q k^T * head_dim**-0.5) v."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class MGCAMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class MGCABlock(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MGCAAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MGCAMlp(dim, dim * 4)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MGCAViT(nn.Module):
    """vits.VisionTransformer (timm PatchEmbed, cls_token, pos_embed, blocks, norm with eps 1e-6)."""

    def __init__(self, img_size=64, patch_size=16, embed_dim=128, depth=2, num_heads=2):
        super().__init__()
        from timm.models.vision_transformer import PatchEmbed

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList([MGCABlock(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed[:, : x.size(1), :]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def make_mgca_vit(seed: int = 0):
    torch.manual_seed(seed)
    img = nn.Module()  # encoder.py ImageEncoder('vit_base'): model, global_embed, local_embed
    img.model = MGCAViT()
    img.global_embed = nn.Module()
    img.global_embed.head = nn.Sequential(nn.Linear(128, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
    img.local_embed = nn.Module()
    img.local_embed.head = nn.Sequential(nn.Conv1d(128, 32, 1), nn.BatchNorm1d(32))
    jitter(img, seed)
    state = {f"img_encoder_q.{k}": v for k, v in img.state_dict().items()}
    # mgca_module.py: text_encoder_q (BertEncoder), patch / word local attention, prototype_layer
    state["text_encoder_q.model.embeddings.word_embeddings.weight"] = torch.randn(30, 8)
    state["text_encoder_q.global_embed.head.0.weight"] = torch.randn(16, 8)
    state["patch_local_atten_layer.in_proj_weight"] = torch.randn(48, 16)
    state["word_local_atten_layer.in_proj_weight"] = torch.randn(48, 16)
    state["prototype_layer.weight"] = torch.randn(50, 16)
    ckpt = {"epoch": 49, "global_step": 1000, "state_dict": state}

    def reference(x):
        with torch.no_grad():
            out = img.model(x)[:, 1:]  # ImageEncoder.vit_forward -> (cls, patches)
        return tokens_to_map(out, (x.shape[-2] // 16, x.shape[-1] // 16))

    return ckpt, reference


# -- MedCLIP (MedCLIPVisionModelViT): transformers SwinModel under vision_model.model


def make_medclip_swin(seed: int = 0, released: bool = True):
    """MedCLIPModel's state dict; ``released``: with the key names of MedCLIP's file (transformers 4.x)."""
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(seed)
    # microsoft/swin-tiny-patch4-window7-224: embed_dim 96, depths [2, 2, 6, 2], heads [3, 6, 12, 24]
    config = SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=2
    )
    medclip = nn.Module()
    medclip.vision_model = nn.Module()
    medclip.vision_model.model = SwinModel(config)  # AutoModel.from_pretrained(VIT_TYPE): with its pooler
    medclip.vision_model.projection_head = nn.Linear(128, 8, bias=False)
    medclip.text_model = nn.Module()
    medclip.text_model.model = nn.Module()
    medclip.text_model.model.embeddings = nn.Embedding(30, 8)
    medclip.text_model.projection_head = nn.Linear(8, 8)
    medclip.logit_scale = nn.Parameter(torch.log(torch.tensor(1 / 0.07)))
    jitter(medclip, seed)
    swin = medclip.vision_model.model

    def reference(x):
        with torch.no_grad():
            out = swin(pixel_values=x, output_hidden_states=True, output_hidden_states_before_downsampling=True)
        maps = {k: out.reshaped_hidden_states[k - 1] for k in (2, 3, 4)}
        b, c, h, w = out.reshaped_hidden_states[4].shape
        maps[5] = out.last_hidden_state.transpose(1, 2).reshape(b, c, h, w)
        return maps

    state = medclip.state_dict()
    if released:
        index = {}
        for i, stage in enumerate(swin.encoder.layers):
            for j, block in enumerate(stage.blocks):
                attn = block.attention
                buf = getattr(attn, "relative_position_index", None)
                if buf is None:
                    buf = attn.relative_position_bias.relative_position_index
                index[f"vision_model.model.encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index"] = buf
        state = released_layout(state, "swin", index)
    return state, reference
