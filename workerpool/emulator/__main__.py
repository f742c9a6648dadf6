"""``python -m workerpool.emulator``: see ``workerpool.emulator.cli``."""

import sys

from workerpool.emulator.cli import main

sys.exit(main())
