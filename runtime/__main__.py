"""``python -m edgekit.runtime selftest DIR`` / ``bench DIR``: the device's tools, runtime only."""

import sys

from ._tools import main

sys.exit(main())
