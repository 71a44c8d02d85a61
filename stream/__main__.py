"""``python -m stream`` is the ``kpi-stream`` command."""

import sys

from stream.cli import main

sys.exit(main())
