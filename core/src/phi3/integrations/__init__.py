"""Public helpers that connect phi3's contract to third-party runtimes, for backend authors.

Each module here wraps one maintained library for one job and imports it lazily, so that
``import phi3`` never pulls it in. Plugins may import these modules (they are documented API, see
``docs/writing-a-backend.md``):

- :mod:`phi3.integrations.transformers_structured`: structured output (``phi3.OutputConstraint``)
  for engines that decode through transformers' ``generate()`` (the reference backend,
  optimum-intel's ``OVModelForCausalLM``), as a logits processor built with llguidance.
- :mod:`phi3.integrations.detokenize`: token ids -> text pieces while decoding (``IncrementalDecoder``).
- :mod:`phi3.integrations.transformers_generation`: ``GenerationConfig`` -> transformers
  ``generate()`` kwargs, the sampling seed, and where a LongRoPE checkpoint switches factors.
"""
