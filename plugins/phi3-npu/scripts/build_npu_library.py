#!/usr/bin/env python3
"""Build and install intel-npu-acceleration-library into the running interpreter's environment.

The documented entry point for users with a checkout of phi3 (CI runs it through ci/setup.py)::

    python plugins/phi3-npu/scripts/build_npu_library.py [--force] [--verbose] [--keep-wheel DIR] ...

The recipe itself lives in the installed package as :mod:`phi3_npu.build_library` (standard
library only), so users who installed phi3-npu from a wheel run the same thing with
``python -m phi3_npu.build_library``. This file runs that module from the source tree, so it works
before phi3-npu is installed too. See the module's docstring for every step and option.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "src" / "phi3_npu" / "build_library.py"

if __name__ == "__main__":
    sys.argv[0] = str(RECIPE)
    runpy.run_path(str(RECIPE), run_name="__main__")
