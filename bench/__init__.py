"""Benchmarks: scripts that print figures and ratios measured in one run (not timed tests).

They measure the returns example: its modules (``returns_data``, ``returns_models``) are
imported from its folder, as its cascade file imports them.
"""

import sys
from pathlib import Path

_EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "returns")
if _EXAMPLE not in sys.path:
    sys.path.append(_EXAMPLE)
