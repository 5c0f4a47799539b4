"""Sphinx configuration: the Markdown pages (MyST) as a site, with the Furo theme.

Build: pip install '.[docs]' && sphinx-build -W -b html docs docs/_build/html
(tests/test_docs.py builds it too, warnings as errors).
"""

project = "leansync"
author = "leansync contributors"
copyright = "leansync contributors, Apache-2.0"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# `[...](#a-heading)` and `[...](page.md#a-heading)` links resolve as on GitHub.
myst_heading_anchors = 3

html_theme = "furo"
html_title = "leansync"


def setup(app):
    # Crontab lines (```cron blocks) are shell commands after the schedule.
    from pygments.lexers.shell import BashLexer

    app.add_lexer("cron", BashLexer)
