"""``python -m tests.chaos.worker``: ``tipstream worker`` with the chaos crash points armed."""

import sys

from streams.cli.main import main
from tests.chaos.crash import install_from_env

if __name__ == "__main__":
    install_from_env()
    sys.exit(main(["worker"]))
