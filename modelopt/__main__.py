import sys

from modelopt.cli import main

sys.exit(main())
