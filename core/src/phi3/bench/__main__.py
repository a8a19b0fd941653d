"""``python -m phi3.bench SPEC.json OUT.json``: the measuring child of ``phi3 bench``."""

import sys

from phi3.bench.worker import worker_main

sys.exit(worker_main())
