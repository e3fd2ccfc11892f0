"""MkDocs hook (mkdocs.yml `hooks:`): the hand-written pages link a suite's report where it
lives in the repository (`../reports/bench.md`, so the links work when the docs are read on
GitHub); on the site the report is the copy tools/gen_docs.py writes under
generated/findings/, and the link is made to point there."""

from __future__ import annotations

import re

REPORT = re.compile(r"\((?:\.\./)+reports/(\w+)\.md(#[^)]*)?\)")


def on_page_markdown(markdown: str, page, config, files) -> str:
    up = "../" * page.file.src_uri.count("/")  # from the page's folder to docs/
    return REPORT.sub(lambda m: f"({up}generated/findings/{m.group(1)}.md{m.group(2) or ''})",
                      markdown)
