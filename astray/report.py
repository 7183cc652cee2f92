"""``python -m astray.report``: the ``astray report`` command (astray/cli/report.py)."""

import sys

from astray.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
