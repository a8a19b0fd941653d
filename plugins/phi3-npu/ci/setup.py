#!/usr/bin/env python3
"""CI entry for the phi3-npu nox session: build intel-npu-acceleration-library into this venv.

The top-level noxfile runs ``python plugins/phi3-npu/ci/setup.py`` with the session's interpreter
after installing ``./core[testing]``, ``./plugins/phi3-openvino`` and ``./plugins/phi3-npu[test]``
under ``ci/constraints.txt`` + ``plugins/phi3-npu/ci-constraints.txt``. The ``test`` extra pulls in
the ``library`` extra, so the library's prerequisites (neural-compressor 3.7.1, numpy<2,
setuptools<82, six, torch, transformers) are already installed at the pinned versions and the
build script's own prerequisite step finds nothing to change.

This only delegates to ``scripts/build_npu_library.py``, the documented user-facing recipe (an
offline build from the sdist, 30-110 s here; ~13 s when already installed), so CI exercises
exactly what users run. It then imports the library in a fresh interpreter (in a scratch
directory) and fails loudly if the import or its device query does not work.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent
BUILD = PLUGIN / "scripts" / "build_npu_library.py"
CHECK = (
    "import warnings; warnings.simplefilter('ignore')\n"
    "from phi3.vendor_compat import hide_broken_torchvision; hide_broken_torchvision()\n"
    "import intel_npu_acceleration_library as lib, intel_npu_acceleration_library.backend as backend\n"
    "print('intel-npu-acceleration-library', lib.__version__, 'npu_available', backend.npu_available())\n"
)


def main() -> int:
    started = time.monotonic()
    print(f"[phi3-npu ci] building intel-npu-acceleration-library with {BUILD}", flush=True)
    code = subprocess.call([sys.executable, str(BUILD)])
    if code != 0:
        print(f"[phi3-npu ci] {BUILD.name} failed with exit code {code}", flush=True)
        return code
    with tempfile.TemporaryDirectory(prefix="phi3-npu-ci-") as scratch:
        done = subprocess.run([sys.executable, "-c", CHECK], cwd=scratch, capture_output=True, text=True, check=False)
    print(done.stdout.strip() or done.stderr.strip()[-2000:], flush=True)
    if done.returncode != 0:
        return 1
    print(f"[phi3-npu ci] ready in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
