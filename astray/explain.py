"""``python -m astray.explain``: the ``astray explain`` command (astray/cli/explain.py)."""

import sys

from astray.cli.explain import main

if __name__ == "__main__":
    sys.exit(main())
