"""``python3 -m tcmu_scst``: the ``tcmu-scst`` command."""

import sys

from tcmu_scst.cli import main

sys.exit(main())
