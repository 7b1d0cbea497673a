"""The documentation: README.md and docs/*.md link only to files and headings that exist, the
configuration reference is what its generator renders from defaults.yaml and the rules table
now, and the code map names every module of the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from falsecli.core import rules
from falsecli.present import reference

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks, whose ``#`` lines are comments, not headings."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown text; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_prose(text)):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


def broken_links(page: Path) -> list[str]:
    """``target (why)`` for each relative link or image of ``page`` that resolves to no file, or
    whose ``#anchor`` names no heading of the Markdown file it points to."""
    broken = []
    for target in _LINK.findall(_CODE_SPAN.sub("", _prose(page.read_text(encoding="utf-8")))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text("utf-8")):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def test_the_link_checker_finds_missing_files_and_headings(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, twice\n\n"
                                       "## A `code` heading, twice\n")
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n```bash\n# not a heading\n```\n\n"
        "[ok](other.md) [ok](other.md#a-code-heading-twice-1) ![ok](fig.png) [ok](#title)\n"
        "[web](https://example.org/x.md) `[in code](nowhere.md)`\n"
        "[bad](missing.md) ![bad](missing.png) [bad](other.md#no-such) [bad](#not-a-heading)\n")
    assert broken_links(page) == ["missing.md (no such file)", "missing.png (no such file)",
                                  "other.md#no-such (no heading #no-such in other.md)",
                                  "#not-a-heading (no heading #not-a-heading in page.md)"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_starts_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_readme_gives_the_test_command_ci_runs() -> None:
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_configuration_reference_is_generated_from_the_rules() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference.render(), (
        "docs/configuration.md is stale: python -m falsecli.present.reference > "
        "docs/configuration.md")


def test_the_reference_documents_every_key_of_the_rules_table() -> None:
    rows = re.findall(r"^\| `([\w.]+)` \| `[^`]*` \| (.+?) \| (.*?) \|$", reference.render(),
                      re.M)
    assert sorted(key for key, _, _ in rows) == sorted(rules.RULES)
    assert all(accepts and comment for _, accepts, comment in rows)


def test_accepts_says_every_part_of_a_rule() -> None:
    rule = rules.Rule(list, nullable=True, length=(1, 3), distinct=True,
                       items=rules.Rule(float, gt=0, le=2.5), why="ignored here")
    assert reference.accepts(rule) == ("list of 1 to 3 items, distinct, or null; "
                                       "each item: number > 0 and <= 2.5")


def test_the_code_map_names_every_module() -> None:
    code_map = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `([^`]+)` \|", code_map, re.M))
    package = ROOT / "falsecli"
    missing = []
    for path in sorted([*package.rglob("*.py"), package / "defaults.yaml"]):
        name = path.relative_to(package).as_posix()
        floor = f"{path.parent.relative_to(package).as_posix()}/"
        if name not in named and not (path.name == "__init__.py" and floor in named):
            missing.append(name)
    assert missing == [], f"docs/development.md's code map lacks {missing}"
