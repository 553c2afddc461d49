"""Torch dataset and collation of image-report pairs (augmentation, sentence sampling, tokenisation)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from pretrain.config import AugmentConfig
from pretrain.data.records import PairRecord

log = logging.getLogger("pretrain")


class ImageReadError(OSError):
    """An image file cannot be decoded."""


def load_image(path: str, size: int) -> torch.Tensor:
    """Grey-scale image, zero-padded to a centred square and resized to ``size``: uint8 ``(1, size, size)``.

    JPEGs are decoded at reduced resolution when they are much larger than ``size`` (Pillow's draft mode),
    which makes full-size MIMIC-CXR-JPG files cheap to read.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("L", (size, size))
            img = img.convert("L")
            w, h = img.size
            side = max(w, h)
            canvas = Image.new("L", (side, side), 0)
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            canvas = canvas.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for broken files
        raise ImageReadError(f"{path}: cannot read image ({e})") from e
    return torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy())[None]


def build_image_transform(size: int, aug: AugmentConfig):
    """LoVT's image augmentation (train) as a torchvision v2 pipeline on float tensors in [0, 1]."""
    from torchvision.transforms import v2

    if not aug.enabled:
        return None
    kernel = 2 * math.ceil(3 * aug.blur_sigma[1] * size / 224) + 1  # covers +-3 sigma at this resolution
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=aug.crop_scale, antialias=True),
            v2.RandomHorizontalFlip(aug.hflip_p),
            v2.RandomAffine(
                degrees=aug.rotate_deg, translate=(aug.translate, aug.translate), scale=aug.scale
            ),
            v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast),
            v2.GaussianBlur(kernel, sigma=tuple(s * size / 224 for s in aug.blur_sigma)),
        ]
    )


def swap_sentences(sentences: list[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """Random sentence swaps; their number ~ Geometric(p) on 0, 1, 2, ... (LoVT's text augmentation)."""
    out = list(sentences)
    if len(out) < 2 or p >= 1.0:
        return out
    u = torch.rand((), generator=generator).item()
    n_swaps = int(math.floor(math.log(max(u, 1e-12)) / math.log(1.0 - p)))
    for _ in range(n_swaps):
        i, j = torch.randint(len(out), (2,), generator=generator).tolist()
        out[i], out[j] = out[j], out[i]
    return out


class PairDataset(torch.utils.data.Dataset):
    """Image-report pairs -> ``{"image": (1, S, S) float, "sentences": list[str]}``.

    Args:
        records: the pairs of one split.
        image_size: side of the square model input.
        mean / std: grey-level normalisation (on [0, 1]).
        augment: augmentation settings; default: none (validation / analysis).
        sentences: ``all`` or ``one_random`` (one sentence of the report, as ConVIRT).
        train: the training split: ``one_random`` draws a new random sentence at every step (with or
            without augmentation); otherwise (validation, analysis) it is always the first sentence, so the
            validation loss is the same at every epoch.
    """

    def __init__(
        self,
        records: Sequence[PairRecord],
        image_size: int,
        mean: float,
        std: float,
        augment: AugmentConfig | None = None,
        sentences: str = "all",
        *,
        train: bool = False,
    ) -> None:
        if not records:
            raise ValueError("no pairs to train on")
        if sentences not in ("all", "one_random"):
            raise ValueError(f"sentences must be 'all' or 'one_random', got {sentences!r}")
        self.records = list(records)
        self.image_size = int(image_size)
        self.mean, self.std = float(mean), float(std)
        self.augment = augment or AugmentConfig(enabled=False)
        self.sentences = sentences
        self.train = bool(train)
        self.transform = build_image_transform(self.image_size, self.augment)
        self.metainfo = {"pairs": len(self.records)}
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __deepcopy__(self, memo):  # mmengine deep-copies dataloader configs; the records are immutable
        return self

    def _image(self, record: PairRecord) -> torch.Tensor:
        paths = record.images
        path = (
            paths[torch.randint(len(paths), ()).item()]
            if self.augment.enabled and len(paths) > 1
            else paths[0]
        )
        img = load_image(path, self.image_size).float() / 255.0
        if self.transform is not None:
            img = self.transform(img).clamp(0.0, 1.0)
        return (img - self.mean) / self.std

    def __getitem__(self, index: int) -> dict:
        for attempt in range(min(len(self), 10)):
            record = self.records[(index + attempt) % len(self)]
            try:
                image = self._image(record)
                break
            except ImageReadError as e:
                # one broken file must not end a long run: say which, and use the next pair this time
                if str(e) not in self._warned:
                    self._warned.add(str(e))
                    log.warning("skipping an unreadable image for this step: %s", e)
        else:
            raise ImageReadError(
                f"{min(len(self), 10)} consecutive images could not be read, e.g. {record.images}"
            )
        sentences = list(record.sentences)
        if self.augment.enabled:
            sentences = swap_sentences(sentences, self.augment.sentence_swap_p)
        if self.sentences == "one_random":
            # sampling depends on the split, not on augmentation (--no-augment / --synthetic train on all)
            pick = torch.randint(len(sentences), ()).item() if self.train else 0
            sentences = [sentences[pick]]
        return {"image": image, "sentences": sentences, "index": index}


class PairCollator:
    """Stacks images and tokenises whole reports with a sentence index per token.

    The report is encoded as ``[CLS] s_1 s_2 ... [SEP]`` (at most ``max_tokens``); sentences that no longer
    fit are dropped (the first one is truncated instead). Returns ``images (B, 1, S, S)``, ``input_ids``
    and ``attention_mask`` ``(B, T)``, ``sentence_index (B, T)`` (the sentence of each token, -1 for special
    tokens and padding) and ``sentence_mask (B, S_max)``.
    """

    def __init__(self, tokenizer, max_tokens: int = 512) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)

    def __deepcopy__(self, memo):
        return self

    def __call__(self, items: list[dict]) -> dict:
        tok = self.tokenizer
        flat = [s for it in items for s in it["sentences"]]
        ids = tok(flat, add_special_tokens=False)["input_ids"]
        cls_id, sep_id, pad_id = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
        seqs, sent_idx = [], []
        k = 0
        for it in items:
            seq, idx = [cls_id], [-1]
            budget = self.max_tokens - 2
            placed = 0
            for j in range(len(it["sentences"])):
                piece = ids[k + j]
                if len(piece) > budget:
                    if j == 0:
                        piece = piece[:budget]
                    else:
                        break
                if not piece:
                    continue
                seq += piece
                idx += [placed] * len(piece)
                placed += 1
                budget -= len(piece)
            k += len(it["sentences"])
            seq.append(sep_id)
            idx.append(-1)
            seqs.append(seq)
            sent_idx.append(idx)
        t = max(len(s) for s in seqs)
        b = len(items)
        input_ids = torch.full((b, t), pad_id, dtype=torch.long)
        attention = torch.zeros((b, t), dtype=torch.long)
        sentence_index = torch.full((b, t), -1, dtype=torch.long)
        for i, (seq, idx) in enumerate(zip(seqs, sent_idx)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            sentence_index[i, : len(idx)] = torch.tensor(idx)
        counts = (sentence_index.max(dim=1).values + 1).clamp_min(1)
        s_max = int(counts.max())
        sentence_mask = torch.arange(s_max)[None, :] < counts[:, None]
        return {
            "images": torch.stack([it["image"] for it in items]),
            "input_ids": input_ids,
            "attention_mask": attention,
            "sentence_index": sentence_index,
            "sentence_mask": sentence_mask,
        }


def image_statistics(records: Sequence[PairRecord], size: int, max_images: int = 200, seed: int = 0):
    """Mean and std of the grey levels (on [0, 1]) of up to ``max_images`` training images."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(records), size=min(max_images, len(records)), replace=False)
    total = total_sq = count = 0.0
    for i in chosen:
        try:
            x = load_image(records[i].images[0], size).double() / 255.0
        except ImageReadError as e:
            log.warning("image statistics: %s", e)
            continue
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += x.numel()
    if count == 0:
        raise ImageReadError("none of the sampled training images could be read")
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 1e-12))
    return mean, std
