"""The conformance kit for phi3 backends (install with ``pip install "phi3-core[testing]"``).

- :func:`phi3.testing.tiny_model.make_tiny_phi3` builds a tiny random Phi-3 checkpoint offline;
  ``variant=`` (:data:`phi3.testing.variants.VARIANTS`) mirrors a catalogue entry's layout with
  discriminating weights, and :data:`phi3.testing.variants.MISTAKES` models the bugs they expose.
- :mod:`phi3.testing.reference` is the transformers fp32 reference backends are compared with.
- :class:`phi3.testing.suite.BackendConformanceSuite` is the pytest suite a backend subclasses.
- :class:`phi3.testing.parity.FamilyParitySuite` is the opt-in parity suite over every variant.
- :mod:`phi3.testing.fixtures` holds the pytest fixtures (``pytest_plugins = ["phi3.testing.fixtures"]``).
- :mod:`phi3.testing.reference_backend` is a real (transformers, fp32, CPU) backend used to test
  phi3-core itself and as an example of the contract.

Nothing here imports torch at import time.
"""

from phi3.testing.overrides import override

__all__ = ["override"]
