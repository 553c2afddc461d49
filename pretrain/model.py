"""The LoVT image-text model: ResNet regions + BERT sentences, attention pooling, projections, cross attention.

- Image: a torchvision ResNet (kept with torchvision's attribute names, so the export is the plain
  torchvision state dict); local features are the conv5 regions (7 x 7 at 224 px), the global feature is
  attention pooling over them (query = mean region) with its head-averaged weights w^I.
- Text: a Hugging Face BERT encodes the whole report; a sentence is the max-pool of its token states; the
  global feature is attention pooling over the sentences with weights w^R. The embeddings and the first
  ``text_frozen_layers`` layers are frozen.
- Projections: 2-layer MLPs d -> hidden -> dim with BatchNorm before the ReLU, separately for local and
  global features of each modality (BatchNorm statistics over real entries only, padding excluded).
- Cross-modal attention with shared W_k, W_v, W_o (dim x dim) and BatchNorm on the output: each region
  attends over the sentences of its sample (z^{R->I}) and each sentence over the regions (z^{I->R}).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrcore.keys import PRETRAIN_PREFIXES, normalize_keys
from cxrcore.weights import weights_dir as _weights_dir
from pretrain.config import LossConfig, ModelConfig

RESNET_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


class ImageWeightsUnavailableError(RuntimeError):
    """ImageNet weights for the image encoder are not on disk and cannot be downloaded."""


def _valid(mask: Tensor | None, x: Tensor) -> Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    valid = _valid(mask, x).to(x.dtype)[..., None]
    return (x * valid).sum(1) / valid.sum(1).clamp_min(1.0)


class AttentionPool(nn.Module):
    """Multi-head attention pooling: query = mean of the (real) entries, keys = values = the entries."""

    def __init__(self, dim: int, heads: int = 8) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention pooling: feature size {dim} is not divisible by {heads} heads")
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, N, d)`` -> pooled ``(B, d)`` and head-averaged weights ``(B, N)`` (0 on padding, sum 1)."""
        valid = _valid(mask, x)
        query = masked_mean(x, valid)[:, None, :]
        out, weights = self.attn(
            query, x, x, key_padding_mask=~valid, need_weights=True, average_attn_weights=True
        )
        return out[:, 0], weights[:, 0]


def average_pool(x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean of the real entries, with the matching uniform weights."""
    valid = _valid(mask, x).to(x.dtype)
    return masked_mean(x, mask), valid / valid.sum(-1, keepdim=True).clamp_min(1.0)


class ProjectionMLP(nn.Module):
    """``d -> hidden -> out`` with BatchNorm before the ReLU; on ``(B, N, d)`` only real entries count."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.ndim == 2:
            return self.net(x)
        b, n, _ = x.shape
        if mask is None:
            return self.net(x.reshape(b * n, -1)).reshape(b, n, -1)
        y = self.net(x[mask])
        out = y.new_zeros(b, n, y.shape[-1])
        out[mask] = y
        return out


def _masked_batchnorm(norm: nn.BatchNorm1d, x: Tensor, mask: Tensor | None) -> Tensor:
    b, n, d = x.shape
    if mask is None:
        return norm(x.reshape(b * n, d)).reshape(b, n, d)
    out = x.new_zeros(b, n, d)
    out[mask] = norm(x[mask])
    return out


class CrossModalAttention(nn.Module):
    """Scaled dot-product attention between the local embeddings of the two modalities of a sample.

    ``z^{R->I}_n = BN(W_o sum_m softmax_m(<W_k z^I_n, W_k z^R_m> / sqrt(d)) W_v z^R_m)`` and symmetrically
    ``z^{I->R}_s`` over the regions. W_k, W_v, W_o are shared by both directions; each direction has its
    own output BatchNorm (the two outputs live in different modalities' statistics).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.w_o = nn.Linear(dim, dim, bias=False)
        self.norm_rep2img = nn.BatchNorm1d(dim)
        self.norm_img2rep = nn.BatchNorm1d(dim)
        self.scale = 1.0 / math.sqrt(dim)

    def attend(self, queries: Tensor, keys: Tensor, key_mask: Tensor | None) -> Tensor:
        scores = torch.bmm(self.w_k(queries), self.w_k(keys).transpose(1, 2)) * self.scale
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, :], float("-inf"))
        return self.w_o(torch.bmm(scores.softmax(-1), self.w_v(keys)))

    def forward(self, z_img: Tensor, z_rep: Tensor, rep_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Returns ``(z^{R->I} (B, N, d), z^{I->R} (B, S, d))``."""
        rep2img = _masked_batchnorm(self.norm_rep2img, self.attend(z_img, z_rep, rep_mask), None)
        img2rep = _masked_batchnorm(self.norm_img2rep, self.attend(z_rep, z_img, None), rep_mask)
        return rep2img, img2rep


# ---------------------------------------------------------------------------------------- encoders


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a weights file, through cxrbench's one hardened loader (never runs code from it)."""
    from cxrcore.weights import load_weights

    return load_weights(path).state  # errors: cxrcore.weights.CheckpointError (a ValueError naming the file)


def strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove wrapper prefixes shared by every key and the classifier (``fc.*``)."""
    state = normalize_keys(state, PRETRAIN_PREFIXES)
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def imagenet_state_dict(arch: str) -> dict[str, Tensor]:
    """torchvision's ImageNet weights of ``arch`` from ``$CXRBENCH_WEIGHTS_DIR`` / the torch hub cache.

    Downloaded into the cache when downloads are allowed (``CXRBENCH_OFFLINE`` unset).
    """
    import torchvision.models as tvm

    from pretrain.text import offline

    enum = tvm.get_model_weights(arch).IMAGENET1K_V1
    filename = enum.url.rsplit("/", 1)[-1]
    for folder in (_weights_dir(), Path(torch.hub.get_dir()) / "checkpoints"):
        if (folder / filename).is_file():
            return _read_state_dict(folder / filename)
    how = (
        f"download {enum.url} on a machine with internet access into {_weights_dir()} (or set "
        "CXRBENCH_WEIGHTS_DIR), pass a weights file with --image-init PATH, or use --image-init random"
    )
    if offline():
        raise ImageWeightsUnavailableError(f"ImageNet weights for {arch} are not on disk (offline): {how}")
    target = _weights_dir() / filename
    try:  # download only: torch.hub.load_state_dict_from_url would unpickle with weights_only=False
        target.parent.mkdir(parents=True, exist_ok=True)
        sha_prefix = filename.rsplit("-", 1)[-1].split(".")[0]
        torch.hub.download_url_to_file(enum.url, str(target), hash_prefix=sha_prefix, progress=False)
    except Exception as e:  # URLError, HTTPError, hash mismatch
        raise ImageWeightsUnavailableError(
            f"ImageNet weights for {arch} could not be downloaded ({e}): {how}"
        ) from e
    return _read_state_dict(target)


class ImageEncoder(nn.Module):
    """A torchvision ResNet without its classifier, returning the conv5 feature map ``(B, C, h, w)``."""

    def __init__(self, arch: str = "resnet50", init: str = "random") -> None:
        super().__init__()
        import torchvision.models as tvm

        if arch not in RESNET_CHANNELS:
            raise ValueError(f"unknown image architecture '{arch}'; known: {', '.join(RESNET_CHANNELS)}")
        net = getattr(tvm, arch)(weights=None)
        net.fc = nn.Identity()  # no parameters: the state dict is torchvision's minus fc.*
        self.resnet = net
        self.arch = arch
        self.channels = RESNET_CHANNELS[arch]
        if init == "imagenet":
            self.load_backbone(imagenet_state_dict(arch), f"ImageNet {arch}")
        elif init != "random":
            path = Path(init).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"--image-init: weights file not found: {path}")
            self.load_backbone(_read_state_dict(path), str(path))

    def load_backbone(self, state: dict[str, Tensor], source: str) -> None:
        state = strip_prefixes(dict(state))
        expected = self.resnet.state_dict()
        missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in expected]
        unexpected += [k for k in state if k in expected and state[k].shape != expected[k].shape]
        if missing or unexpected:
            raise ValueError(
                f"{source}: not a torchvision {self.arch} state dict; missing {missing[:5]} "
                f"({len(missing)}), unexpected or mis-shaped {unexpected[:5]} ({len(unexpected)})"
            )
        self.resnet.load_state_dict(state, strict=False)

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The torchvision-layout state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ...; no ``fc``)."""
        return {k: v.detach().clone().contiguous() for k, v in self.resnet.state_dict().items()}

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:  # grey-scale: the same image in the three input channels
            x = x.expand(-1, 3, -1, -1)
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        return r.layer4(r.layer3(r.layer2(r.layer1(x))))


class TextEncoder(nn.Module):
    """BERT over the whole report -> one feature per sentence (max-pool of its token states)."""

    def __init__(self, bert: nn.Module, frozen_layers: int = 6) -> None:
        super().__init__()
        self.bert = bert
        self.hidden = bert.config.hidden_size
        layers = bert.encoder.layer
        self.frozen_layers = min(int(frozen_layers), len(layers))
        self.frozen = [bert.embeddings, *layers[: self.frozen_layers]] if frozen_layers >= 0 else []
        for module in self.frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        for module in self.frozen:  # frozen layers: no dropout either
            module.eval()
        return self

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, sentence_index: Tensor, n_sentences: int
    ) -> Tensor:
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        b, _, h = states.shape
        valid = sentence_index >= 0
        batch = torch.arange(b, device=states.device)[:, None].expand_as(sentence_index)
        target = (batch * n_sentences + sentence_index)[valid]
        out = states.new_zeros(b * n_sentences, h)
        out = out.scatter_reduce(
            0, target[:, None].expand(-1, h), states[valid], reduce="amax", include_self=False
        )
        return out.view(b, n_sentences, h)


class ImageTextModel(nn.Module):
    """The full model; builds only the parts the loss configuration uses.

    Args:
        config: architecture.
        loss: decides whether local projections and cross attention exist.
        bert: a loaded Hugging Face BERT (see :func:`pretrain.text.load_text_model`).
        image_encoder / text_encoder: existing encoders to use instead of building them (e.g. shared by
            several models in a benchmark).
    """

    def __init__(
        self,
        config: ModelConfig,
        loss: LossConfig,
        bert: nn.Module | None = None,
        *,
        image_encoder: ImageEncoder | None = None,
        text_encoder: TextEncoder | None = None,
    ) -> None:
        super().__init__()
        if bert is None and text_encoder is None:
            raise ValueError("pass the BERT (bert=...) or a text encoder")
        self.config = config
        self.image_encoder = image_encoder or ImageEncoder(config.image_arch, config.image_init)
        self.text_encoder = text_encoder or TextEncoder(bert, config.text_frozen_layers)
        c, h = self.image_encoder.channels, self.text_encoder.hidden
        hid, dim = config.proj_hidden, config.proj_dim
        if config.pool == "attention":
            self.image_pool = AttentionPool(c, config.heads)
            self.text_pool = AttentionPool(h, config.heads)
        self.image_global_proj = ProjectionMLP(c, hid, dim)
        self.text_global_proj = ProjectionMLP(h, hid, dim)
        self.has_local = loss.needs_local
        self.has_cross = loss.needs_cross_attention
        if self.has_local:
            self.image_local_proj = ProjectionMLP(c, hid, dim)
            self.text_local_proj = ProjectionMLP(h, hid, dim)
        if self.has_cross:
            self.cross_attention = CrossModalAttention(dim)

    def _pool(self, which: str, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.config.pool == "attention":
            return getattr(self, f"{which}_pool")(x, mask)
        return average_pool(x, mask)

    def tokens_in_global_space(self, which: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Each region / sentence feature ``(B, N, d)`` mapped as the global head maps the pooled feature.

        The pooled feature is a weighted mean of the entries after the attention pooling's value and output
        projections (linear), so ``global_proj(out_proj(v_proj(x_n)))`` puts entry n in the global embedding
        space (as MaskCLIP reads CLIP's attention pool); with average pooling it is ``global_proj(x_n)``. An
        entry equal to every other entry of its sample maps exactly onto the sample's global embedding.
        Exists for every preset: the analysis measures local alignment / uniformity there for every model.
        """
        if which not in ("image", "text"):
            raise ValueError(f"which must be 'image' or 'text', got {which!r}")
        if self.config.pool == "attention":
            attn = getattr(self, f"{which}_pool").attn
            e = attn.embed_dim
            v = F.linear(x, attn.in_proj_weight[2 * e :], attn.in_proj_bias[2 * e :])
            x = attn.out_proj(v)
        proj = self.image_global_proj if which == "image" else self.text_global_proj
        return proj(x, mask)

    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        fmap = self.image_encoder(images)  # (B, C, h, w)
        regions = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major
        pooled, weights = self._pool("image", regions, None)
        out = {"img_global": self.image_global_proj(pooled), "img_weights": weights, "img_regions": regions}
        out["grid"] = torch.tensor(fmap.shape[-2:])
        if self.has_local:
            out["img_local"] = self.image_local_proj(regions)
        return out

    def encode_text(self, input_ids, attention_mask, sentence_index, sentence_mask) -> dict[str, Tensor]:
        sentences = self.text_encoder(input_ids, attention_mask, sentence_index, sentence_mask.shape[1])
        pooled, weights = self._pool("text", sentences, sentence_mask)
        out = {
            "rep_global": self.text_global_proj(pooled),
            "rep_weights": weights,
            "rep_mask": sentence_mask,
            "rep_sentences": sentences,
        }
        if self.has_local:
            out["rep_local"] = self.text_local_proj(sentences, sentence_mask)
        return out

    def forward(self, images, input_ids, attention_mask, sentence_index, sentence_mask) -> dict[str, Tensor]:
        """Everything the losses and the analysis need (see :func:`pretrain.objective.compute_terms`)."""
        out = self.encode_image(images)
        out.update(self.encode_text(input_ids, attention_mask, sentence_index, sentence_mask.bool()))
        if self.has_cross:
            out["img_cross"], out["rep_cross"] = self.cross_attention(
                out["img_local"], out["rep_local"], out["rep_mask"]
            )
        return out


def normalize(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)
