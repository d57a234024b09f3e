"""Sphinx configuration of featcache's documentation site.

Build it (offline, strict: every warning, among them a broken link or a page missing from the
navigation, is an error):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages are Markdown (MyST), readable on the forge as they are. The CLI reference is generated
at build time from the typer app (featcache/cli/reference.py) and the Python reference from the
docstrings (autodoc), so neither can drift from the code; why Sphinx: docs/about.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this checkout, not an installed copy

from featcache.version import __version__  # noqa: E402

project = "featcache"
author = "the featcache authors"
copyright = "the featcache authors, Apache-2.0"  # noqa: A001
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Headings up to ####  get GitHub-style anchors, so `page.md#a-heading` links resolve as on the forge.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]
# Links to repository files (`../manifests/demo.yaml`) are checked to exist and become downloads.
suppress_warnings: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True

html_theme = "furo"
html_title = f"featcache {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# Nothing is fetched: no intersphinx, no remote images; the build runs on an offline machine.


def _cli_reference(app, docname: str, source: list[str]) -> None:  # noqa: ANN001
    """Fill reference/cli.md with the reference generated from the typer app itself."""
    if docname == "reference/cli":
        from featcache.cli.reference import cli_markdown

        source[0] += "\n" + cli_markdown(heading_level=2)


def setup(app):  # noqa: ANN001, ANN201
    app.connect("source-read", _cli_reference)
    return {"parallel_read_safe": True}
