"""``python -m bench <command> ...`` is ``colorbench <command> ...``."""
import sys

from .cli import main

sys.exit(main())
