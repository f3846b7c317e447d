"""The frozen executable's entry point: the same ``main`` as ``python -m gateway``."""

import sys

from gateway.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
