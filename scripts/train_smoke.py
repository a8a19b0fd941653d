"""Retrain the smoke model that ships in phi3-core (core/src/phi3/smoke/model).

    python scripts/train_smoke.py                 # the shipped model (about 12 minutes on 2 CPU cores)
    python scripts/train_smoke.py --out /tmp/m    # somewhere else

Needs torch (pinned 2.13.0 in ci/constraints.txt for a reproducible result), transformers and
tokenizers: pip install "./core[testing]". The corpus and the training loop are phi3.smoke.corpus
and phi3.smoke.train.
"""

from __future__ import annotations

from phi3.smoke.train import main

if __name__ == "__main__":
    raise SystemExit(main())
