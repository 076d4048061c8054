"""The documents a reader follows: every link reaches a file and a heading, and bench/README.md names every
benchmark."""

from __future__ import annotations

import re
from pathlib import Path

from test_benches import SMOKE

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            text = match.group(1).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_every_relative_link_reaches_a_file_and_a_heading():
    broken = []
    for document in DOCUMENTS:
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked (no network in the tests)
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.exists():
                broken.append(f"{document.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved.read_text()):
                broken.append(f"{document.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_anchor_rule_matches_github_s():
    assert heading_anchors("## GPU record, `bench/gpu.sh`: not measured\n# Training step and I/O, `train_step.py`") == {
        "gpu-record-benchgpush-not-measured",
        "training-step-and-io-train_steppy",
    }


def test_bench_readme_names_every_benchmark():
    readme = (REPO / "bench" / "README.md").read_text()
    assert sorted(name for name in SMOKE if f"`{name}`" not in readme) == []
