import sys

from workerpool.cli import main

sys.exit(main())
