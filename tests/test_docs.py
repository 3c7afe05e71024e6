"""The documentation stays true: every relative link and anchor resolves, `make help` lists every target,
the README stays a guide (<= 250 lines)."""
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = sorted([ROOT / "README.md", ROOT / "MODEL_CARD.md", *(ROOT / "docs").glob("*.md"),
                *(ROOT / "release").glob("*/README.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def slugs(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces -> hyphens, repeats numbered."""
    out, seen = set(), {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", "")).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)       # code blocks hold commands, not links
    return [next(g for g in m.groups() if g) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):                                   # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no {path})")
        elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.name}: {broken}"


def test_the_link_checker_finds_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A title\n\n[ok](#a-title) [bad](#nope) [gone](missing.md) ![pic](x.png)\n")
    assert links(page) == ["#a-title", "#nope", "missing.md", "x.png"]
    assert slugs(page) == {"a-title"}


def test_make_help_lists_every_target():
    text = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY: (.+)$", text, re.M).group(1).split())
    defined = set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))
    listed = set(re.findall(r"^  make (\S+)", subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True,
                                                              text=True, check=True).stdout, re.M))
    assert defined - listed == set(), f"make help does not list {sorted(defined - listed)}"
    assert phony == defined, f".PHONY and the targets differ: {sorted(phony ^ defined)}"


def test_the_readme_is_a_guide_not_a_notebook():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
