"""The documentation's generated pages, written under docs/generated/ before `mkdocs build`
(`make docs`): the technique reference from the registries, the metric table from
modelopt/results/metrics.py, every command's options from modelopt/cli.py, one findings
page per shipped report (reports/*.md with its plots), and the home page (docs/index.md)
from the README's opening. Never written by hand, so never written twice. The reference
pages (techniques, metrics, commands) are committed, so that the docs read on GitHub have
them; tests/test_docs.py fails when they are not what this writes.

    .venv/bin/python tools/gen_docs.py
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "generated"


def metrics_page() -> str:
    from modelopt.results import metrics as M

    better = {True: "higher", False: "lower", None: "–"}
    lines = ["# Metrics: every figure a record holds", "",
             "Generated from `modelopt/results/metrics.py`, the one table the report, `compare`, "
             "`export` and the pytest `extra_info` read. *Gate*: how `compare` judges a change "
             "(points, relative, absolute, exact; – not gated); *timing*: a wall-clock figure.",
             "", "| name | title | better | gate | tolerance | unit | timing |",
             "|---|---|---|---|---|---|---|"]
    for m in M.TABLE.values():
        gate = m.kind if m.kind != "none" else "–"
        title = m.title.replace("|", "\\|")  # a pipe in a cell would end it
        lines.append(f"| `{m.name}` | {title} | {better[m.higher_is_better]} | {gate} | "
                     f"{m.tolerance or '–'} | {m.unit or '–'} | {'yes' if m.timing else ''} |")
    return "\n".join(lines) + "\n"


def findings() -> list[str]:
    """Each report page with its plots, under generated/findings/; returns the suite names."""
    dest = OUT / "findings"
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for page in sorted((ROOT / "reports").glob("*.md")):
        if page.name == "README.md":
            continue
        text = page.read_text()
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
            if (ROOT / "reports" / image).is_file():
                shutil.copy(ROOT / "reports" / image, dest / image)
        (dest / page.name).write_text(text)
        names.append(page.stem)
    lines = ["# Findings: one page per shipped suite", "",
             "Each page is the suite's report as `modelopt report` wrote it into reports/ "
             "(copied here by tools/gen_docs.py). What they say, in a few lines each, is in "
             "[What we found](../../findings.md).", ""]
    lines += [f"- [{n}]({n}.md)" for n in names]
    (dest / "index.md").write_text("\n".join(lines) + "\n")
    return names


def cli_page() -> str:
    """Every command's `--help`, from the parser itself: a new option is documented when
    it is added."""
    import argparse
    import os

    from modelopt.cli import parser

    os.environ["COLUMNS"] = "92"  # argparse wraps to the terminal: the page's width, always
    top = parser()
    lines = ["# Every command's options", "",
             "Generated from `modelopt/cli.py` (each command's `--help`); what the commands do "
             "and how they fit together: [the command line](../reference/cli.md).", "",
             "```text", top.format_help().rstrip(), "```", ""]
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        lines += [f"## modelopt {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def home_page() -> str:
    """The site's home: the README's answer and headline table (written once, there)."""
    readme = (ROOT / "README.md").read_text()
    intro = readme[readme.index("**modelopt** tells you"):readme.index("## Quick start")]
    intro = re.sub(r"\(reports/(\w+)\.md\)", r"(generated/findings/\1.md)", intro)
    return ("# modelopt\n\n" + intro.strip() + "\n\nStart with [Getting started]"
            "(getting-started.md); the reference pages of every technique and metric are "
            "generated from the code ([techniques](generated/techniques.md), "
            "[metrics](generated/metrics.md)).\n")


def main() -> None:
    from modelopt.spec.listing import listing_markdown

    if (OUT / "findings").exists():  # copies of reports/ (.gitignore); the rest is committed
        shutil.rmtree(OUT / "findings")
    OUT.mkdir(parents=True, exist_ok=True)
    (ROOT / "docs" / "index.md").write_text(home_page())  # generated too (.gitignore)
    (OUT / "techniques.md").write_text(listing_markdown())
    (OUT / "metrics.md").write_text(metrics_page())
    (OUT / "cli.md").write_text(cli_page())
    names = findings()
    listed = (ROOT / "mkdocs.yml").read_text()
    missing = [n for n in names if f"generated/findings/{n}.md" not in listed]
    if missing:  # a new shipped suite's page must be in the site's navigation
        raise SystemExit(f"mkdocs.yml's nav lists no findings page for: {', '.join(missing)}")
    print(f"wrote {OUT.relative_to(ROOT)}: techniques, metrics, commands, {len(names)} "
          "findings pages")


if __name__ == "__main__":
    main()
