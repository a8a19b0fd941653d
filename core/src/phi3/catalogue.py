"""Short names for the Phi-3 family, so users can type ``phi3 chat phi3.5-mini``.

Every entry is a ``Phi3ForCausalLM`` checkpoint; ``smoke`` is the built-in toy model that ships with
phi3-core for demos and tests (:mod:`phi3.smoke`: a tiny Phi-3 trained on a synthetic corpus).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogueEntry:
    alias: str
    repo_id: str
    description: str
    context_length: int
    parameters: float | None = None
    """Parameter count, for the model size bucket auto's measured speeds are kept by (phi3.speed_records)."""


SMOKE_ALIAS = "smoke"

CATALOGUE: dict[str, CatalogueEntry] = {
    e.alias: e
    for e in (
        CatalogueEntry("phi3-mini-4k", "microsoft/Phi-3-mini-4k-instruct", "Phi-3-mini, 3.8B, 4k context", 4096, 3.8e9),
        CatalogueEntry(
            "phi3-mini-128k", "microsoft/Phi-3-mini-128k-instruct", "Phi-3-mini, 3.8B, 128k context", 131072, 3.8e9
        ),
        CatalogueEntry(
            "phi3-medium-4k", "microsoft/Phi-3-medium-4k-instruct", "Phi-3-medium, 14B, 4k context", 4096, 14e9
        ),
        CatalogueEntry(
            "phi3-medium-128k", "microsoft/Phi-3-medium-128k-instruct", "Phi-3-medium, 14B, 128k context", 131072, 14e9
        ),
        CatalogueEntry(
            "phi3.5-mini", "microsoft/Phi-3.5-mini-instruct", "Phi-3.5-mini, 3.8B, 128k context", 131072, 3.8e9
        ),
        CatalogueEntry("phi4-mini", "microsoft/Phi-4-mini-instruct", "Phi-4-mini, 3.8B, 128k context", 131072, 3.8e9),
    )
}


def lookup(alias: str) -> CatalogueEntry | None:
    return CATALOGUE.get(alias.lower())


__all__ = ["CATALOGUE", "SMOKE_ALIAS", "CatalogueEntry", "lookup"]
