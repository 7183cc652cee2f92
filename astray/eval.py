"""``python -m astray.eval``: the ``astray eval`` command (astray/cli/eval.py)."""

import sys

from astray.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
