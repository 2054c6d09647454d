"""colorbench's harness. Importing it checks first that ``models`` and ``losses`` are colorbench's own and that
torch and torchvision match (``bench.startup``)."""
from .startup import check as _check

_check()
