"""The docs keep up with the code: every public name is in the API reference, links resolve."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import taskengine

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
API = DOCS / "reference" / "api.md"

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose(text: str) -> str:
    """The text with fenced code blocks blanked (headings and links in code are not real).

    Every character of a code block but its newlines becomes a space, so offsets into the
    result are offsets into ``text``.
    """
    return _FENCE.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for match in _HEADING.finditer(_prose(path.read_text())):
        slug = _slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _section(path: Path, name: str) -> str:
    """The first section whose heading names `name` (in backticks), code blocks included.

    A section runs to the next heading of the same or a higher level.
    """
    text = path.read_text()
    prose = _prose(text)  # same offsets as text: code blocks are blanked line for line
    found = list(_HEADING.finditer(prose))
    for index, match in enumerate(found):
        if f"`{name}`" not in match.group(2):
            continue
        level = len(match.group(1))
        later = [m.start() for m in found[index + 1 :] if len(m.group(1)) <= level]
        return text[match.start() : later[0] if later else len(text)]
    raise AssertionError(f"{path.relative_to(ROOT)} has no heading naming `{name}`")


def _engine_members() -> list[str]:
    return sorted(name for name in vars(taskengine.TaskEngine) if not name.startswith("_"))


def _doc_files() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _parameters(function: Callable[..., object]) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def test_the_docs_tree_is_there():
    names = {str(path.relative_to(DOCS)) for path in _doc_files()}
    assert {"index.md", "quickstart.md", "reference/api.md"} <= names


@pytest.mark.parametrize("name", sorted(taskengine.__all__))
def test_every_public_name_has_a_section_in_the_api_reference(name):
    assert _section(API, name)


@pytest.mark.parametrize("name", _engine_members())
def test_every_engine_method_has_a_section_naming_each_parameter(name):
    section = _section(API, f"TaskEngine.{name}")
    member = getattr(taskengine.TaskEngine, name)
    if callable(member):
        for parameter in _parameters(member):
            assert re.search(rf"\b{parameter}\b", section), f"`{parameter}` of {name} undocumented"


@pytest.mark.parametrize(
    "cls", [taskengine.TaskEngine, taskengine.SqliteStore, taskengine.PostgresStore], ids=str
)
def test_every_constructor_parameter_is_documented(cls):
    section = _section(API, cls.__name__)
    for parameter in _parameters(cls):
        assert re.search(rf"\b{parameter}\b", section), f"`{parameter}` of {cls.__name__}"


@pytest.mark.parametrize("path", _doc_files(), ids=lambda path: str(path.relative_to(DOCS)))
def test_every_relative_link_resolves(path):
    broken = []
    for target in _LINK.findall(_prose(path.read_text())):
        if _SCHEME.match(target):
            continue  # an absolute URL: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


def test_the_link_checker_sees_links():
    targets = _LINK.findall(_prose((DOCS / "index.md").read_text()))
    assert "quickstart.md" in targets
    assert "reference/api.md" in targets


def test_slugs_follow_github_rules():
    assert _slug("`TaskEngine.create`") == "taskenginecreate"
    assert _slug('3. Why `if __name__ == "__main__":` is required') == (
        "3-why-if-__name__--__main__-is-required"
    )


_CITATION = re.compile(r"\b(contract|faults)\.md#([a-z0-9-]+)(?:(?: to| and) #([a-z0-9-]+))?")


def test_every_contract_citation_in_the_code_resolves() -> None:
    """Comments cite ``contract.md#...`` and ``faults.md#...`` of docs/reference/: each exists."""
    root = Path(__file__).resolve().parents[2]
    missing = []
    seen = 0
    for folder in ("taskengine", "tests", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            for match in _CITATION.finditer(path.read_text()):
                page = root / "docs" / "reference" / f"{match.group(1)}.md"
                for anchor in filter(None, match.group(2, 3)):
                    seen += 1
                    if anchor not in _anchors(page):
                        missing.append(f"{path.relative_to(root)}: {match.group(0)}")
    assert seen > 50  # the citations are there to check
    assert missing == []
