import os
import sys

# `python -m modelopt` puts the current directory first on sys.path (the `modelopt` script
# does not): run inside a results directory received from elsewhere, a `tabulate.py` or
# `pydantic.py` there would run as the library. Plugins come by name from an installed
# package, PYTHONPATH, a suite's own folder or --plugins' directory, never by accident.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from modelopt.cli import main  # noqa: E402

sys.exit(main())
