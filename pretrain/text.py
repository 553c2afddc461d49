"""Report text: section parsing, sentence splitting (rules, no model download), the BERT text encoder.

The section parser is LoVT's (its MIMIC-CXR ``section_parser.py``): a section starts at a line `` NAME:``
(one leading space, upper-case name); names are normalised by its table (typos included), then by
substrings (``FINAL IMPRESSION`` -> impression, ``PA AND LATERAL VIEWS OF THE CHEST`` -> findings). Sentence splitting is rule-based: it splits after ``.``, ``?`` and ``!`` that
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

# Section names as LoVT reads MIMIC-CXR reports (github.com/philip-mueller/lovt,
# src/data/datasets/mimic_cxr/section_parser.py, itself from zenodo.org/record/3539363). Three rules, applied
# in this order by normalize_section_name (LoVT: normalize_section_names):
# 1. this table of exact (lower-cased) names, typos included (LoVT: ``frequent_sections``);
SECTION_NAMES: dict[str, str] = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    "ndication": "impression",  # sic (LoVT's table)
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}
# 2. otherwise the first of these main sections that the name contains (LoVT: ``main_sections``);
MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
# 3. otherwise "findings" when the name contains one of these (a title describing the study; LoVT:
#    ``p_findings``).
FINDINGS_SUBSTRINGS = (
    "chest",
    "portable",
    "pa and lateral",
    "lateral and pa",
    "ap and lateral",
    "lateral and ap",
    "frontal and",
    "two views",
    "frontal view",
    "pa view",
    "ap view",
    "one view",
    "lateral view",
    "bone window",
    "frontal upright",
    "frontal semi-upright",
    "ribs",
    "pa and lat",
)
# A header: a new line, one space (MIMIC's report layout), upper case letters, spaces and ()/,- then a colon
# and white space (LoVT: section_text's ``p_section``).
_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)
# Studies LoVT leaves out (section_parser.custom_mimic_cxr_rules: reports whose sections its parser gets
# wrong, listed with custom names or text spans; split_into_sections returns None for every one of them).
LOVT_EXCLUDED_STUDIES = frozenset(
    """s50913680 s59363654 s59279892 s59768032 s57936451 s50058765 s53356173 s53202765 s50808053
    s51966317 s50743547 s56451190 s59067458 s59215320 s55124749 s54365831 s59087630 s58157373 s56482935
    s58375018 s54654948 s55157853 s51491012 s50525523 s57564132 s59982525 s53488209 s54875119 s50196495
    s56579911 s52648681 s59889364 s53514462 s59505494 s53182247 s51410602 s56412866 s54986978 s59003148
    s57150433 s56760320 s59562049 s52674888 s55258338 s59330497 s52119491 s58235663 s50798377 s54168089
    s53071062 s56724958 s54231141 s53607029 s52035334""".split()
)
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "fig", "incl", "resp", "cf"}
_ENUM = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+")


class TextModelUnavailableError(RuntimeError):
    """The BERT weights / tokenizer are neither a local folder nor in the Hugging Face cache."""


def normalize_section_name(name: str) -> str:
    """A header's section name (lower case) by LoVT's three rules (see :data:`SECTION_NAMES`)."""
    name = name.lower().strip()
    if name in SECTION_NAMES:
        return SECTION_NAMES[name]
    for main in MAIN_SECTIONS:
        if main in name:
            return main
    if any(part in name for part in FINDINGS_SUBSTRINGS):
        return "findings"
    return name


def parse_sections(text: str) -> list[tuple[str, str]]:
    """A report's sections in order, as ``(normalised name, body)``; the body is the raw text.

    Mirrors LoVT's ``section_text`` (section_parser.py): a header is ``\\n`` + one space + upper-case name
    + ``:`` + white space; the text before the first header is ``preamble`` (``full report`` when there is
    no header); after a header the search for the next one resumes at the end of the header's line (a
    header in the rest of that line is body text); empty ``findings`` / ``impression`` sections are
    dropped (report titles such as ``CHEST, PA LATERAL:`` directly followed by another header).
    """
    matches = []
    m = _HEADER.search(text, 0)
    while m:
        matches.append(m)
        newline = text.find("\n", m.end())
        m = _HEADER.search(text, m.end() if newline == -1 else newline)
    if not matches:
        return [("full report", text)]
    out = [("preamble", text[: matches[0].start(1)])]
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out.append((normalize_section_name(m.group(1)), text[m.end() : end]))
    return [(n, b) for n, b in out if not (n in ("findings", "impression") and not b.strip())]


def findings_and_impression(text: str) -> dict[str, str]:
    """The ``findings`` and ``impression`` bodies of a report (empty strings when absent).

    As LoVT's ``split_into_sections`` (mimic_cxr_dataset.py): when a report has several sections of one
    name, the last one is used.
    """
    out = {"findings": "", "impression": ""}
    for name, body in parse_sections(text):
        if name in out:
            out[name] = body.strip()
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
