"""Step time of each pretraining preset relative to ``clip``, measured side by side in one run.

One training step = forward of both encoders, the preset's heads and losses, backward, AdamW step. The
presets share one ResNet and one BERT (random weights of the real sizes: ResNet-50 and BERT-base by
default), so they differ only in what the preset adds (local projections, cross attention, local terms,
priors, pooling; ConVIRT also encodes one sentence instead of the report). Steps are interleaved
round-robin (the order rotates every round) and the median is reported, so machine load affects all
presets alike.

Full steps at batch 32 / 224 px take tens of seconds on a CPU, so only a few fit into a CPU run and their
ratios carry the machine's noise. The second table therefore times what differs between presets on its
own, many times: the heads and losses (forward + backward + AdamW) on fixed encoder outputs of the same
batch. ``shared + heads`` then estimates each preset's step with the encoders' cost measured once
(``shared`` = clip's full step minus clip's heads).

    .venv/bin/python bench/pretrain_step.py                      # batch 32, 224 px, all presets (CPU: ~10 min)
    .venv/bin/python bench/pretrain_step.py --device cuda --amp --steps 10 --heads-steps 50

Goals (issue #6): global_prior <= 1.10 x clip, lovt <= 1.5 x clip.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def build_batch(batch_size: int, image_size: int, tokenizer, one_sentence: bool, seed: int = 0) -> dict:
    from pretrain.data.dataset import PairCollator
    from pretrain.data.synthetic import make_pair

    rng = np.random.default_rng(seed)
    items = []
    for _ in range(batch_size):
        pixels, sentences, _ = make_pair(rng, image_size)
        image = torch.from_numpy(pixels).float()[None] / 255.0
        items.append(
            {"image": (image - 0.5) / 0.25, "sentences": sentences[:1] if one_sentence else sentences}
        )
    return PairCollator(tokenizer, 512)(items)


class FixedImage(nn.Module):
    """Stands in for the image encoder: a fixed feature map that receives gradients like the real one."""

    def __init__(self, fmap: torch.Tensor) -> None:
        super().__init__()
        self.fmap = nn.Parameter(fmap.detach().clone())
        self.channels = fmap.shape[1]

    def forward(self, images):
        return self.fmap


class FixedText(nn.Module):
    """Stands in for the text encoder: returns fixed sentence features."""

    def __init__(self, sentences: torch.Tensor) -> None:
        super().__init__()
        self.sentences = nn.Parameter(sentences.detach().clone())
        self.hidden = sentences.shape[-1]

    def forward(self, input_ids, attention_mask, sentence_index, n_sentences):
        return self.sentences


def main(argv: list[str] | None = None) -> int:
    from transformers import BertConfig, BertModel

    from pretrain.config import PRESETS, ModelConfig, preset_config
    from pretrain.data.synthetic import vocabulary
    from pretrain.engine import PretrainModel
    from pretrain.model import ImageEncoder, ImageTextModel, TextEncoder
    from pretrain.text import load_text_model, write_local_bert

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=2, help="timed full steps per preset (after the warm-up)")
    p.add_argument("--heads-steps", type=int, default=7, help="timed heads-only steps per preset (0 = skip)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (at --warmup-batch-size)")
    p.add_argument("--warmup-batch-size", type=int, default=2, help="small: allocations and kernels only")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated; clip is always included")
    p.add_argument("--image-arch", default="resnet50")
    p.add_argument(
        "--text-hidden", type=int, default=768, help="BERT size (default BERT-base: 768 / 12 / 12)"
    )
    p.add_argument("--text-layers", type=int, default=12)
    p.add_argument("--text-heads", type=int, default=12)
    p.add_argument("--frozen-layers", type=int, default=6)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA)")
    args = p.parse_args(argv)

    presets = ["clip"] + [x for x in args.presets.split(",") if x and x != "clip"]
    device = torch.device(args.device)
    amp = args.amp and device.type == "cuda"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # a tokenizer for the synthetic vocabulary; the BERT itself is built in memory at full size
        folder = write_local_bert(Path(tmp) / "tok", vocabulary(), hidden=32, layers=1, heads=2)
        tokenizer, _ = load_text_model(str(folder))
    bert = BertModel(
        BertConfig(
            vocab_size=max(len(tokenizer), 30522),
            hidden_size=args.text_hidden,
            num_hidden_layers=args.text_layers,
            num_attention_heads=args.text_heads,
            intermediate_size=4 * args.text_hidden,
        ),
        add_pooling_layer=False,
    )
    image_encoder = ImageEncoder(args.image_arch, "random").to(device)
    text_encoder = TextEncoder(bert, args.frozen_layers).to(device)
    configs = {
        n: preset_config(n, model=ModelConfig(image_arch=args.image_arch, image_init="random"))
        for n in presets
    }
    models = {}
    for name, cfg in configs.items():
        # the preset's heads around the shared encoders (no second ResNet / BERT in memory)
        net = ImageTextModel(cfg.model, cfg.loss, image_encoder=image_encoder, text_encoder=text_encoder)
        models[name] = (PretrainModel(net, cfg.loss).to(device).train(), cfg.sentences)
    params = {id(q): q for m, _ in models.values() for q in m.parameters() if q.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-5)  # parameters without a gradient are skipped

    def batches_of(size: int) -> dict:
        return {
            mode: {
                k: v.to(device)
                for k, v in build_batch(size, args.image_size, tokenizer, mode == "one_random").items()
            }
            for mode in ("all", "one_random")  # ConVIRT encodes one sentence per report
        }

    timed_batches = batches_of(args.batch_size)
    warmup_batches = batches_of(args.warmup_batch_size)

    def step(model, batch, opt) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = model(**batch, mode="loss")["loss"]
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def round_robin(rounds: int, run) -> None:
        for r in range(rounds):
            for name in presets[r % len(presets) :] + presets[: r % len(presets)]:
                run(r, name)

    print(
        f"batch {args.batch_size}, {args.image_size} px, {args.image_arch} + BERT {args.text_hidden}/"
        f"{args.text_layers} ({args.frozen_layers} frozen), device {device}{' amp' if amp else ''}, torch "
        f"threads {torch.get_num_threads()}; {args.warmup} warm-up round(s) at batch {args.warmup_batch_size}, "
        f"{args.steps} timed full step(s) and {args.heads_steps} heads-only step(s) per preset, round-robin",
        flush=True,
    )
    full: dict[str, list[float]] = {n: [] for n in presets}

    def full_step(r: int, name: str) -> None:
        model, sentences = models[name]
        if r < args.warmup:
            step(model, warmup_batches[sentences], optimizer)
        else:
            full[name].append(step(model, timed_batches[sentences], optimizer))
            print(f"  {name:<18} {full[name][-1]:8.3f} s", flush=True)

    round_robin(args.warmup + args.steps, full_step)

    heads: dict[str, list[float]] = {n: [] for n in presets}
    if args.heads_steps:
        # fixed encoder outputs of the timed batch; only the preset-specific part runs
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            fmap = image_encoder(timed_batches["all"]["images"]).float()
            sent = {
                mode: text_encoder(
                    b["input_ids"], b["attention_mask"], b["sentence_index"], b["sentence_mask"].shape[1]
                ).float()
                for mode, b in timed_batches.items()
            }
        head_models = {}
        for name, cfg in configs.items():
            sentences = cfg.sentences
            net = ImageTextModel(
                cfg.model, cfg.loss, image_encoder=FixedImage(fmap), text_encoder=FixedText(sent[sentences])
            )
            model = PretrainModel(net, cfg.loss).to(device).train()
            head_models[name] = (model, sentences, torch.optim.AdamW(model.parameters(), lr=1e-5))

        def heads_step(r: int, name: str) -> None:
            model, sentences, opt = head_models[name]
            t = step(model, timed_batches[sentences], opt)
            if r > 0:  # the first round allocates the optimizer state
                heads[name].append(t)

        round_robin(1 + args.heads_steps, heads_step)

    base = statistics.median(full["clip"])
    print(f"\n{'preset':<20} {'full step s':>12} {'x clip':>7}", end="")
    if args.heads_steps:
        shared = base - statistics.median(heads["clip"])
        print(f" {'heads s':>9} {'shared+heads x clip':>20}", end="")
    print()
    for name in presets:
        med = statistics.median(full[name])
        line = f"{name:<20} {med:>12.3f} {med / base:>7.2f}"
        if args.heads_steps:
            h = statistics.median(heads[name])
            est = (
                "  (other text input)"
                if configs[name].sentences != "all"
                else f"{(shared + h) / base:>20.3f}"
            )
            line += f" {h:>9.3f} {est}"
        print(line)
    if args.heads_steps:
        print(f"\nshared (encoders + their backward + AdamW on them, from clip) = {shared:.3f} s")
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {platform.processor()}, torch {torch.__version__}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
