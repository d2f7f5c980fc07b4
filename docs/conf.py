"""Sphinx configuration: Markdown pages (myst-parser), the default theme, nothing from the network.

Built by ``scripts/test.sh`` with warnings as errors:
``.venv/bin/sphinx-build -W --keep-going -q -b html docs build/docs``.
"""

project = "chat_security"
author = "chat_security contributors"
release = "0.1.0"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# README-style links: ``[Keys](keys.md#anchor)`` and ``[x](#anchor)`` to headings down to ###.
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "chat_security"
