"""`python -m kubetune` is the `kubetune` command."""

import sys

from kubetune.cli import main

if __name__ == "__main__":
    sys.exit(main())
