"""The README's recipes as the tests read them: from README.md, so the docs cannot drift.

A fenced block whose info string names a target is a recipe; the word after
the language says what the tests do with it:

- ```` ```python mysite/views.py ```` (any path): appended to that file of a new
  ``startproject``; ```` ```python mysite/asgi.py replace ```` written in its place;
- ```` ```bash run ````: run in that project, in order, once its files are in place;
- ```` ```bash install ````: run in order in the project's fresh virtual
  environment before the project exists (the wheel form, the ASGI server);
- ```` ```bash checkout ````: run in a virtual environment of its own (the path form);
- ```` ```bash serve ````: a server started in the project, then stopped;
- ```` ```bash production ````: the Production recipe, from a checkout.

Plain blocks (```` ```bash ````, ```` ```python ````) are examples no test runs.
``CHECKOUT`` is how the recipes name a checkout of this repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
CHECKOUT = "/path/to/chat_security"
FENCE = re.compile(r"^```(\w+) ([^\s`]+)( replace)?\n(.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    lang: str
    target: str
    replace: bool
    body: str


def blocks() -> list[Block]:
    """Every recipe block of the README, in order."""
    return [
        Block(lang, target, bool(replace), body)
        for lang, target, replace, body in FENCE.findall(README.read_text())
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
