"""MIMIC-CXR reports read as LoVT reads them: one test per rule of its section parser.

Reference: github.com/philip-mueller/lovt, src/data/datasets/mimic_cxr/section_parser.py (``section_text``,
``normalize_section_names``, ``custom_mimic_cxr_rules``) and mimic_cxr_dataset.py (``split_into_sections``).
The report texts have MIMIC's form: a title line, then lines that start with one space.
"""

from __future__ import annotations

import pytest

from pretrain.data.manifest import sentences_of
from pretrain.text import (
    FINDINGS_SUBSTRINGS,
    LOVT_EXCLUDED_STUDIES,
    SECTION_NAMES,
    findings_and_impression,
    normalize_section_name,
    parse_sections,
    report_sentences,
)

TITLE = "                                 FINAL REPORT\n"


def mimic(*lines: str) -> str:
    return TITLE + "\n".join(" " + line if line else " " for line in lines) + "\n"


def test_issue_examples_are_read():
    # CHEST, TWO VIEWS: is a header (table) and its body is the findings
    text = mimic("INDICATION:  Cough.", "", "CHEST, TWO VIEWS:  The lungs are clear.", "", "IMPRESSION:  Normal.")
    assert findings_and_impression(text) == {"findings": "The lungs are clear.", "impression": "Normal."}
    # PA AND LATERAL VIEWS OF THE CHEST: -> findings (substring rule)
    text = mimic("PA AND LATERAL VIEWS OF THE CHEST:", "", "No effusion. Heart size normal.")
    assert findings_and_impression(text)["findings"] == "No effusion. Heart size normal."
    # IMPRESSON: (typo in the table) and FINAL IMPRESSION: (main-section substring)
    assert findings_and_impression(mimic("FINDINGS: Clear.", "IMPRESSON:  No pneumonia."))["impression"] == (
        "No pneumonia."
    )
    assert findings_and_impression(mimic("FINAL IMPRESSION:  No pneumonia."))["impression"] == "No pneumonia."
    assert report_sentences(mimic("FINDINGS: Clear lungs.", "FINAL IMPRESSION:  No pneumonia.")) == [
        "Clear lungs.",
        "No pneumonia.",
    ]


@pytest.mark.parametrize(
    "header, name",
    [
        # rule 1, the table: synonyms and every typo LoVT lists
        ("FINDINGS", "findings"),
        ("FINDING", "findings"),
        ("FINDINS", "findings"),
        ("FINDINDGS", "findings"),
        ("FINDGINGS", "findings"),
        ("FINDNGS", "findings"),
        ("FINDNINGS", "findings"),
        ("FINIDNGS", "findings"),
        ("REFERENCE FINDINGS", "findings"),
        ("CHEST, TWO VIEWS", "findings"),
        ("IMPRESSION", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("FINDINGS/ IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),
        ("IMPRRESSION", "impression"),
        ("IMORESSION", "impression"),
        ("IMPRESSOIN", "impression"),
        ("IMPRSSION", "impression"),
        ("IMPRESION", "impression"),
        ("IMPERSSION", "impression"),
        ("MPRESSION", "impression"),
        ("IMPESSION", "impression"),
        ("NDICATION", "impression"),  # sic, as in LoVT's table
        ("IDICATION", "indication"),
        ("REASON FOR EXAM", "indication"),
        ("CLINICAL INFORMATION", "history"),
        ("PFI", "history"),
        ("COMPARISION", "comparison"),
        ("COMPARISONS", "comparison"),
        ("EXAM", "examination"),
        ("WETREAD", "wet read"),
        ("RECOMMENDATION(S)", "recommendations"),
        # rule 2: the first main section the name contains (impression before findings)
        ("FINAL IMPRESSION", "impression"),
        ("IMPRESSION AND FINDINGS", "impression"),
        ("PRELIMINARY FINDINGS", "findings"),
        ("PAST HISTORY", "history"),
        ("COMPARISON STUDY", "comparison"),
        ("ADDENDUM TO REPORT", "addendum"),
        ("HISTORY OF CHEST PAIN", "history"),  # rule 2 wins over rule 3 ("chest")
        # rule 3: a title describing the study
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),
        ("PORTABLE AP", "findings"),
        ("AP AND LATERAL", "findings"),
        ("FRONTAL AND LATERAL", "findings"),
        ("SINGLE FRONTAL VIEW", "findings"),
        ("BILATERAL RIBS", "findings"),
        ("PA AND LAT", "findings"),
        # none: the lower-cased name stays
        ("TECHNIQUE", "technique"),
        ("PROCEDURE", "procedure"),
        ("NOTE", "note"),
    ],
)
def test_section_name_rules(header, name):
    assert normalize_section_name(header) == name
    # and as a header of a report in MIMIC's form
    sections = parse_sections(mimic("INDICATION:  Cough.", "", f"{header}:  Body text.", ""))
    assert sections[-1][0] == name and sections[-1][1].strip() == "Body text."


def test_table_and_substrings_are_lovts():
    # sizes of LoVT's frequent_sections (58 names) and p_findings (18 substrings)
    assert len(SECTION_NAMES) == 58 and len(FINDINGS_SUBSTRINGS) == 18
    assert set(SECTION_NAMES.values()) == {
        "preamble", "impression", "comparison", "indication", "findings", "examination", "technique",
        "history", "notification", "recommendations", "addendum", "date", "comment", "wet read",
    }  # fmt: skip


def test_header_form():
    # a header needs a new line and exactly one space before it (MIMIC's layout) ...
    assert [n for n, _ in parse_sections("x\n FINDINGS: Clear.")] == ["preamble", "findings"]
    assert [n for n, _ in parse_sections("x\nFINDINGS: Clear.")] == ["full report"]
    assert [n for n, _ in parse_sections("FINDINGS: Clear.")] == ["full report"]
    assert [n for n, _ in parse_sections("x\n\tFINDINGS: Clear.")] == ["full report"]
    # (more spaces are part of the name, which is stripped)
    assert [n for n, _ in parse_sections("x\n   FINDINGS: Clear.")] == ["preamble", "findings"]
    # ... upper-case letters, spaces and ()/,- only, then a colon and white space
    assert [n for n, _ in parse_sections("x\n Findings: Clear.")] == ["full report"]
    assert [n for n, _ in parse_sections("x\n FINDINGS 2: Clear.")] == ["full report"]
    assert [n for n, _ in parse_sections("x\n FINDINGS:Clear.")] == ["full report"]
    assert [n for n, _ in parse_sections("x\n CHEST (PA/LAT), PORTABLE-AP: Clear.")] == ["preamble", "findings"]
    # without any header the whole text is one section, "full report", and has no findings
    assert parse_sections("Clear lungs.") == [("full report", "Clear lungs.")]
    assert findings_and_impression("Clear lungs.") == {"findings": "", "impression": ""}


def test_search_resumes_after_the_header_line():
    # a header line's rest is its body; the next header is searched from the end of that line, so a
    # header on the line right after a header whose colon ends its line is swallowed (LoVT's behaviour)
    text = mimic("CHEST, PA LATERAL:", "INDICATION:  Cough.", "", "FINDINGS:  Clear.")
    sections = parse_sections(text)
    assert [n for n, _ in sections] == ["preamble", "findings", "findings"]
    assert sections[1][1].strip() == "INDICATION:  Cough."
    # with a blank line between them both are headers, and the empty title section is dropped
    text = mimic("CHEST, PA LATERAL:", "", "INDICATION:  Cough.", "", "FINDINGS:  Clear.")
    assert [n for n, _ in parse_sections(text)] == ["preamble", "indication", "findings"]


def test_empty_findings_and_impression_are_dropped():
    text = mimic("FINDINGS:", "", "IMPRESSION:  Normal.", "", "TECHNIQUE:", "")
    names = [n for n, _ in parse_sections(text)]
    assert names == ["preamble", "impression", "technique"]  # other empty sections stay
    assert findings_and_impression(text) == {"findings": "", "impression": "Normal."}


def test_the_last_section_of_a_name_wins():
    # LoVT's split_into_sections keeps the last findings / impression body, not the first or both
    text = mimic("FINDINGS:  First.", "", "PA AND LATERAL:  Second.", "", "IMPRESSION:  A.", "", "CONCLUSION:  B.")
    assert findings_and_impression(text) == {"findings": "Second.", "impression": "B."}


def test_lovt_excluded_studies(tmp_path, monkeypatch):
    # custom_mimic_cxr_rules: 23 renamed + 31 re-indexed studies, all skipped by split_into_sections
    assert len(LOVT_EXCLUDED_STUDIES) == 54
    assert {"s50913680", "s51491012", "s50525523", "s52035334"} <= LOVT_EXCLUDED_STUDIES
    from pretrain.data import mimic as mimic_reader
    from pretrain.data.fake_mimic import make_fake_mimic

    root = make_fake_mimic(tmp_path, n_patients=4, seed=3)
    before = mimic_reader.read_mimic(root)
    victim = before.records[0]
    monkeypatch.setattr(mimic_reader, "LOVT_EXCLUDED_STUDIES", frozenset({f"s{victim.study_id}"}))
    after = mimic_reader.read_mimic(root)
    assert len(after.records) == len(before.records) - 1
    assert victim.study_id not in {r.study_id for r in after.records}
    assert after.skipped["report excluded by LoVT (its custom rules for mis-parsed reports)"] == 1


def test_manifest_reports_get_mimics_layout():
    # a manifest's report need not indent its lines; its headers are read by the same rules
    assert sentences_of("INDICATION: Cough.\nFINDINGS: Clear lungs.\nIMPRESSON: Normal.") == [
        "Clear lungs.",
        "Normal.",
    ]
    assert sentences_of("Clear lungs. No effusion.") == ["Clear lungs.", "No effusion."]
