"""``python -m astray.train``: the ``astray train`` command (astray/cli/train.py)."""

import sys

from astray.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
