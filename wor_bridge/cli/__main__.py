"""``python -m wor_bridge.cli``: the same as the ``wor-bridge`` script."""

import sys

from wor_bridge.cli.main import main

sys.exit(main())
