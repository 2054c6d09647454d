"""``python -m bench <command> ...`` is ``colorbench <command> ...``."""
import sys

from bench.cli import main

sys.exit(main())
