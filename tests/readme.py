"""The documentation's recipes as the tests read them: from the pages, so they cannot drift.

The pages are ``README.md`` and then the documentation site's pages
(``docs/*.md``) in the order of the tables of contents in ``docs/index.md``,
the order a reader meets them (``PAGES``). A fenced block whose info string
names a target is a recipe; the word after the language says what the tests
do with it:

- ```` ```python mysite/views.py ```` (any path): appended to that file of a new
  ``startproject``; ```` ```python mysite/asgi.py replace ```` written in its place;
- ```` ```bash run ````: run in that project, in order, once its files are in place;
- ```` ```bash install ````: run in order in the project's fresh virtual
  environment before the project exists (the wheel form, the ASGI server);
- ```` ```bash checkout ````: run in a virtual environment of its own (the path form);
- ```` ```bash serve ````: a server started in the project, then stopped;
- ```` ```bash production ````: the Production recipe, from a checkout.

Plain blocks (```` ```bash ````, ```` ```python ````) are examples no test runs.
``CHECKOUT`` is how the recipes name a checkout of this repository. A page
that shows part of the README (a MyST ```` ```{include} ```` block) holds
none of its recipes itself, so each recipe is read, and run, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHECKOUT = "/path/to/chat_security"
FENCE = re.compile(r"^```(\w+) ([^\s`]+)( replace)?\n(.*?)^```", re.DOTALL | re.MULTILINE)
#: A MyST toctree block: its options (``:caption: …``), then one page name a line.
TOCTREE = re.compile(r"^```\{toctree\}\n(.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    lang: str
    target: str
    replace: bool
    body: str
    page: str  # where it is written, relative to the checkout (for messages)


def site_pages() -> list[Path]:
    """The documentation site's pages in the order of ``docs/index.md``'s tables of contents."""
    names = [
        line.strip()
        for toctree in TOCTREE.findall((DOCS / "index.md").read_text())
        for line in toctree.splitlines()
        if line.strip() and not line.lstrip().startswith(":")
    ]
    return [DOCS / "index.md", *(DOCS / f"{name}.md" for name in names)]


def pages() -> list[Path]:
    """Every page that may hold recipes, in the order their recipes run."""
    return [README, *site_pages()]


def blocks() -> list[Block]:
    """Every recipe block of every page, in order."""
    return [
        Block(lang, target, bool(replace), body, page.relative_to(ROOT).as_posix())
        for page in pages()
        for lang, target, replace, body in FENCE.findall(page.read_text())
    ]


def shell(target: str) -> list[str]:
    """The bodies of the ```` ```bash TARGET ```` blocks, in order."""
    return [b.body for b in blocks() if b.lang == "bash" and b.target == target]


def files() -> list[Block]:
    """The blocks that are files of the new project, in order."""
    return [b for b in blocks() if b.lang != "bash"]


def file(target: str) -> str:
    """The body of the one block that is the project file ``target``."""
    (body,) = [b.body for b in files() if b.target == target]
    return body
