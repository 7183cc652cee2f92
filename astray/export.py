"""``python -m astray.export``: the ``astray export`` command (astray/cli/export.py)."""

import sys

from astray.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
