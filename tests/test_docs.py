"""The README and the documentation site (``docs/``): links, pages, and the reference tables.

The site itself is built by ``scripts/test.sh`` with warnings as errors
(``sphinx-build -W``), which refuses a broken link between its pages. These
tests need no Sphinx: every relative link of ``README.md`` and ``docs/*.md``
points to a file that exists (and to a heading of it, for ``#anchor``), as on
a code host; every page is in the site's tables of contents, so
``tests/readme.py`` reads the recipes of every page; and the reference tables
list exactly what the code has (settings and their defaults, error codes,
subcommands, check ids).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from chat_security.conf import DEFAULTS
from chat_security.exceptions import ERROR_CODES
from tests import readme

ROOT = readme.ROOT
DOCS = readme.DOCS
#: The Markdown a reader follows links in: the README, the site's pages, the changelog.
MARKDOWN = [readme.README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
#: The one build command, as CI runs it and the README tells developers.
BUILD = ".venv/bin/sphinx-build -W --keep-going -q -b html docs build/docs"

FENCED = re.compile(r"^(`{3,}).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,3}) +(.+?) *#*$", re.MULTILINE)  # myst_heading_anchors = 3
INCLUDE = re.compile(r"^```\{include\} +(\S+)", re.MULTILINE)


def prose(text: str) -> str:
    """``text`` without its code blocks and code spans (a link there is an example)."""
    return CODE_SPAN.sub("", FENCED.sub("", text))


def slug(title: str) -> str:
    """A heading's anchor, as GitHub and MyST (mdit-py-plugins' ``slugify``) make it."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "")
    return re.sub(r"[^\w\u4e00-\u9fff\- ]", "", text.lower().replace(" ", "-"))


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings, the pages it includes counted in."""
    text = page.read_text()
    found: set[str] = set()
    for _, title in HEADING.findall(FENCED.sub("", text)):
        base = slug(title)
        unique, n = base, 1
        while unique in found:
            unique, n = f"{base}-{n}", n + 1
        found.add(unique)
    for included in INCLUDE.findall(text):
        found |= anchors((page.parent / included).resolve())
    return found


def links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in MARKDOWN
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # https:, mailto: ... are not checked here
    ]


def test_the_pages_have_relative_links_to_check():
    assert len(links()) > 40, links()


@pytest.mark.parametrize(
    ("page", "target"),
    links(),
    ids=[f"{page.relative_to(ROOT)}->{target}" for page, target in links()],
)
def test_every_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.is_file(), f"{page.relative_to(ROOT)}: {target} is no file"
    assert ROOT in linked.parents, f"{page.relative_to(ROOT)}: {target} leaves the checkout"
    if anchor:
        assert anchor in anchors(linked), f"{page.relative_to(ROOT)}: no heading #{anchor} there"


def test_every_page_is_in_the_tables_of_contents_once():
    """So the site links every page, and tests/readme.py reads every page's recipes."""
    listed = [page.name for page in readme.site_pages()]
    assert len(listed) == len(set(listed)), listed
    assert sorted(listed) == sorted(page.name for page in DOCS.glob("*.md"))


def test_recipes_are_only_on_pages_the_tests_read():
    read = set(readme.pages())
    for page in MARKDOWN:
        if readme.FENCE.search(page.read_text()):
            assert page in read, f"{page.relative_to(ROOT)} has a recipe no test runs"


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    text = readme.README.read_text()
    assert text.startswith(
        "# chat_security\n\n```bash\nbash scripts/demo.sh    # install and start the demo site"
    ), text[:200]
    assert "\nbash scripts/test.sh    # install everything the tests need" in text[:300]
    # The first ten minutes; the reference goes into docs/ (issue 17).
    assert len(text.splitlines()) <= 300, "move reference material into a page of docs/"


def test_ci_builds_the_site_with_the_command_the_readme_gives():
    assert f"```bash\n{BUILD}\n```" in readme.README.read_text()
    assert f"\n{BUILD}\n" in (ROOT / "scripts" / "test.sh").read_text()


def table(page: str, header: str) -> list[list[str]]:
    """The rows of the table of ``docs/page`` whose header row starts with ``header``."""
    lines = (DOCS / page).read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def code(cell: str) -> str:
    """The first code span of a table cell."""
    found = re.search(r"`([^`]+)`", cell)
    assert found, cell
    return found.group(1)


def test_the_settings_reference_lists_every_setting_and_its_default():
    rows = table("settings.md", "| key | default |")
    documented = {code(key): default for key, default, *_ in rows}
    assert len(documented) == len(rows), "a setting listed twice"
    assert sorted(documented) == sorted(DEFAULTS)
    for key, default in documented.items():
        assert ast.literal_eval(code(default)) == DEFAULTS[key], key


def test_the_error_codes_page_lists_every_error_code():
    rows = table("errors.md", "| code | meaning |")
    assert [code(row[0]) for row in rows] == list(ERROR_CODES)


def test_the_command_line_page_lists_every_subcommand():
    from chat_security.management.commands.chat_security import Command

    parser = Command().create_parser("manage.py", "chat_security")
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    rows = table("cli.md", "| subcommand | does |")
    assert [code(row[0]).split()[0] for row in rows] == list(subparsers.choices)


def test_the_system_checks_page_lists_every_check_the_code_and_tests_name():
    """Both tables, ``check`` and ``check --deploy``; a retired id stays listed as retired."""
    text = (DOCS / "checks.md").read_text()
    documented = re.findall(r"^\| `(chat_security\.[EW]\d{3})` \|", text, re.MULTILINE)
    assert len(documented) == len(set(documented)), documented
    named: set[str] = set()
    for source in [*(ROOT / "chat_security").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        body = source.read_text()
        named |= set(re.findall(r"chat_security\.[EW]\d{3}", body))
        if source.parent.name == "tests":
            named |= {f"chat_security.{i}" for i in re.findall(r"[\"']([EW]\d{3})[\"']", body)}
    assert len(named) >= 25, named
    assert named <= set(documented), sorted(named - set(documented))


TEST_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)")


def test_every_test_a_page_cites_exists():
    """A page that says a promise is "proved by" a test names one that runs."""
    cited = {(page.name, path, name) for page in MARKDOWN for path, name in
             TEST_ID.findall(page.read_text(encoding="utf-8"))}  # fmt: skip
    assert len(cited) > 50, "the pattern finds the citations (SECURITY.md has many)"
    missing = [
        (page, path, name)
        for page, path, name in sorted(cited)
        if not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert missing == []
