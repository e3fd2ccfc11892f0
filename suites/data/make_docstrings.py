"""Make suites/data/docstrings.csv: text classification of real prose, offline.

Each row is one docstring of a class or function of four standard-library packages (asyncio,
email, logging, xml) and its package: "which package does this documentation describe?".
Made with the Python that runs this script (3.11.7 for the committed file; other versions
differ a little); the docstrings are the Python Software Foundation's, under the PSF License
Agreement (modelopt/corpora/LICENSE.md). suites/text.yaml classifies them.

    .venv/bin/python suites/data/make_docstrings.py
"""

import csv
import importlib
import inspect
import pkgutil
import warnings
from pathlib import Path

PACKAGES = ("asyncio", "email", "logging", "xml")


def modules(package: str):
    root = importlib.import_module(package)
    yield root
    for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=lambda _: None):
        try:
            yield importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - a submodule this platform lacks
            continue


def docstrings(package: str) -> list[str]:
    seen, out = set(), []
    for module in modules(package):
        for obj in list(vars(module).values()):
            found = [obj] + ([v for v in vars(obj).values() if inspect.isfunction(v)]
                             if inspect.isclass(obj) else [])
            for o in found:
                own = (getattr(o, "__module__", "") or "").startswith(package)
                if (inspect.isfunction(o) or inspect.isclass(o)) and own and o.__doc__ \
                        and id(o) not in seen:
                    seen.add(id(o))
                    out.append(inspect.cleandoc(o.__doc__))
    return sorted(set(out))  # one row per distinct text, in a fixed order


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    path = Path(__file__).with_name("docstrings.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "package"])
        for package in PACKAGES:
            for text in docstrings(package):
                writer.writerow([text, package])
    print(f"wrote {path}")
