"""``python -m astray COMMAND ...``: the same as the ``astray`` console script."""

import sys

from astray.cli import main

sys.exit(main())
