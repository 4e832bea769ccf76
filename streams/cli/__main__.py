"""``python -m streams.cli``: the ``tipstream`` command without the installed script."""

import sys

from streams.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
