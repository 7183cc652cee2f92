"""``python -m astray.tune``: the ``astray tune`` command (astray/cli/tune.py)."""

import sys

from astray.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
