"""Report text: section parsing, sentence splitting (rules, no model download), the BERT text encoder.

The section parser follows the MIMIC-CXR conventions: a section starts with an upper-case header followed
by a colon at the start of a line (``FINDINGS:``, ``IMPRESSION:``); a few aliases are mapped to the two
sections pretraining uses. Sentence splitting is rule-based: it splits after ``.``, ``?`` and ``!`` that
are followed by white space and an upper-case letter, a digit or the end of the text, but not after
common abbreviations, decimal numbers or list numbers, and always at blank lines / enumerations.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

# Header aliases (upper case, without the colon) -> canonical section.
SECTION_ALIASES = {
    "FINDINGS": "findings",
    "FINDING": "findings",
    "FINDINGS AND IMPRESSION": "findings",
    "FINDINGS/IMPRESSION": "findings",
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
    "CONCLUSIONS": "impression",
    "SUMMARY": "impression",
}
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()\-]{1,60}?)[ \t]*:", re.MULTILINE)
# Only abbreviations that do not end sentences in reports ("measures 2 cm." and "prior AP." do).
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "fig", "incl", "resp", "cf"}
_ENUM = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+")


class TextModelUnavailableError(RuntimeError):
    """The BERT weights / tokenizer are neither a local folder nor in the Hugging Face cache."""


def parse_sections(text: str) -> dict[str, str]:
    """Split a report into its sections: upper-case header name -> body (whitespace-normalised).

    Text before the first header goes under ``""``. A repeated header's bodies are joined.
    """
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    starts = [(m.start(), m.end(), m.group(1).strip()) for m in matches]
    preamble = text[: starts[0][0]] if starts else text
    if preamble.strip():
        sections[""] = preamble.strip()
    for i, (_, end, name) in enumerate(starts):
        body_end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        body = text[end:body_end].strip()
        key = re.sub(r"\s+", " ", name)
        sections[key] = (sections[key] + "\n" + body).strip() if key in sections else body
    return sections


def findings_and_impression(text: str) -> dict[str, str]:
    """The ``findings`` and ``impression`` sections of a report (empty strings when absent)."""
    out = {"findings": "", "impression": ""}
    for name, body in parse_sections(text).items():
        canonical = SECTION_ALIASES.get(name)
        if canonical and body:
            out[canonical] = (out[canonical] + "\n" + body).strip() if out[canonical] else body
    return out


def _is_boundary(text: str, i: int) -> bool:
    """Is the '.', '?' or '!' at ``text[i]`` the end of a sentence?"""
    ch = text[i]
    if i + 1 < len(text) and not text[i + 1].isspace():
        return False  # "1.5", "e.g.x", "..."
    rest = text[i + 1 :].lstrip()
    if not rest:
        return True
    if ch in "?!":
        return True
    word = re.search(r"([A-Za-z.]+)$", text[:i])
    if word and word.group(1).lower().rstrip(".") in _ABBREVIATIONS:
        return False
    if word and len(word.group(1)) == 1 and word.group(1).isupper():
        return False  # initials: "Dr. J. Smith"
    return rest[0].isupper() or rest[0].isdigit() or rest[0] in "\"'(["


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence splitting of report text (no model, no download)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sentences: list[str] = []
    # paragraphs (blank lines) and enumerations always separate sentences
    for block in re.split(r"\n[ \t]*\n", text):
        for part in _ENUM.split(block):
            part = re.sub(r"\s+", " ", part).strip()
            if not part:
                continue
            start = 0
            for i, ch in enumerate(part):
                if ch in ".?!" and _is_boundary(part, i):
                    sentence = part[start : i + 1].strip()
                    if sentence:
                        sentences.append(sentence)
                    start = i + 1
            tail = part[start:].strip()
            if tail:
                sentences.append(tail)
    # drop fragments without letters ("1.", "___.") that anonymisation or list markers leave behind
    return [s for s in sentences if re.search(r"[A-Za-z]", s)]


def count_tokens(sentences: Iterable[str]) -> int:
    """Word tokens (runs of letters / digits), the unit of the 'fewer than 3 tokens' rule."""
    return sum(len(re.findall(r"[A-Za-z0-9]+", s)) for s in sentences)


def report_sentences(text: str, sections: tuple[str, ...] = ("findings", "impression")) -> list[str]:
    """The sentences of the given sections, in order (findings first)."""
    parts = findings_and_impression(text)
    return [s for name in sections for s in split_sentences(parts.get(name, ""))]


# ------------------------------------------------------------------------------------ text encoder


def offline() -> bool:
    """Downloads are off when ``CXRBENCH_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to something true."""
    return any(
        os.environ.get(k, "") not in ("", "0", "false", "False")
        for k in ("CXRBENCH_OFFLINE", "HF_HUB_OFFLINE")
    )


@contextlib.contextmanager
def _quiet_transformers():
    """No per-file progress bars from transformers while loading / saving (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_text_model(name_or_path: str, *, add_pooling_layer: bool = False):
    """Load a BERT and its tokenizer from a local folder, the Hugging Face cache or (when online) the hub.

    Raises:
        TextModelUnavailableError: neither local nor cached (offline), or the download failed; the message
            says how to get it.
    """
    from transformers import AutoModel, AutoTokenizer

    local = Path(name_or_path).expanduser()
    is_dir = local.is_dir()
    if not is_dir and (os.sep in name_or_path and not re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path)):
        raise TextModelUnavailableError(f"text model folder not found: {local}")
    source = str(local) if is_dir else name_or_path
    local_only = is_dir or offline()
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            model = AutoModel.from_pretrained(
                source, local_files_only=local_only, add_pooling_layer=add_pooling_layer
            )
    except (OSError, ValueError) as e:
        from huggingface_hub.constants import HF_HUB_CACHE

        if is_dir:
            raise TextModelUnavailableError(
                f"{local} is not a loadable BERT folder (needs config.json, the weights and the tokenizer "
                f"files such as vocab.txt): {str(e).splitlines()[0]}"
            ) from e
        how = (
            f"On a machine with internet access run `huggingface-cli download {name_or_path}` (it fills the "
            f"cache at {HF_HUB_CACHE}; copy that folder here or set HF_HOME), or pass a local folder with "
            "--text-model."
        )
        if local_only:
            raise TextModelUnavailableError(
                f"text model '{name_or_path}' is not in the Hugging Face cache and downloads are off "
                f"(CXRBENCH_OFFLINE / HF_HUB_OFFLINE). {how}"
            ) from e
        raise TextModelUnavailableError(
            f"text model '{name_or_path}' could not be loaded ({str(e).splitlines()[0]}). {how}"
        ) from e
    if getattr(model.config, "model_type", None) not in ("bert", "roberta", "distilbert", "electra"):
        raise TextModelUnavailableError(
            f"text model '{name_or_path}' is a {model.config.model_type}; a BERT-style encoder is expected"
        )
    return tokenizer, model


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_local_bert(
    folder: str | os.PathLike,
    words: Iterable[str],
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised BERT and its WordPiece tokenizer to ``folder`` (for tests and demos).

    The vocabulary is the special tokens, the lower-cased ``words``, their ``##`` suffix forms and single
    characters, so any text tokenises without [UNK] floods. Nothing is downloaded.
    """
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: list[str] = list(SPECIAL_TOKENS)
    seen = set(vocab)
    chars = [chr(c) for c in range(33, 127)]
    for token in [w.lower() for w in words] + chars + ["##" + c for c in chars]:
        if token and token not in seen:
            seen.add(token)
            vocab.append(token)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": max_positions}
        )
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(seed)
    with _quiet_transformers():
        BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder
