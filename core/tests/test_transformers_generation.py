"""phi3.integrations.transformers_generation on real tiny checkpoints and real transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3.errors import ArtifactError
from phi3.generation_config import GenerationConfig
from phi3.integrations.transformers_generation import longrope_switch, sampling_seed, to_transformers
from phi3.testing import reference
from phi3.testing.reference import reference_greedy_ids
from phi3.testing.tiny_model import make_tiny_phi3
from phi3.testing.variants import VARIANTS


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rope")
    return {name: make_tiny_phi3(root / name, variant=name) for name in ("phi3-mini-4k", "phi3-mini-128k")}


def test_longrope_switch_reads_a_folder_a_mapping_and_a_transformers_config(checkpoints: dict[str, Path]) -> None:
    from transformers import AutoConfig

    for name, folder in checkpoints.items():
        expected = VARIANTS[name].original_max_position_embeddings if VARIANTS[name].longrope else None
        mapping = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        loaded = AutoConfig.from_pretrained(str(folder))
        assert longrope_switch(folder) == expected, name
        assert longrope_switch(str(folder)) == expected, name
        assert longrope_switch(mapping) == expected, name
        assert longrope_switch(loaded) == expected, name
    assert longrope_switch(checkpoints["phi3-mini-128k"]) is not None


def test_longrope_switch_of_a_folder_without_or_with_a_damaged_config(tmp_path: Path) -> None:
    assert longrope_switch(tmp_path) is None
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"config\.json is unreadable") as caught:
        longrope_switch(tmp_path)
    assert caught.value.hint and "rebuild" in caught.value.hint


def test_the_reference_uses_the_one_implementation() -> None:
    assert reference.longrope_switch is longrope_switch


def test_to_transformers_greedy_ignore_eos_decodes_what_the_reference_decodes(checkpoints: dict[str, Path]) -> None:
    """generate(**to_transformers(...)) gives the fp32 reference's greedy ids, exactly n of them past EOS."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = checkpoints["phi3-mini-4k"]
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager")
    ids = AutoTokenizer.from_pretrained(str(folder))("Hello there, tiny model", return_tensors="pt")["input_ids"]
    eos = list(model.generation_config.eos_token_id)
    kwargs = to_transformers(GenerationConfig(ignore_eos=True, max_new_tokens=24), 24, eos)
    with torch.no_grad():
        out = model.generate(ids, **kwargs)
    new = [int(i) for i in out[0, ids.shape[1] :]]
    assert len(new) == 24
    assert not set(new) & set(eos)
    assert new == reference_greedy_ids(folder, input_ids=[int(i) for i in ids[0]], max_new_tokens=24)


def test_to_transformers_maps_sampling_and_leaves_greedy_flags_unset() -> None:
    greedy = to_transformers(GenerationConfig(), 10, [2, 7])
    assert greedy["do_sample"] is False and greedy["temperature"] is None and greedy["top_k"] is None
    assert greedy["eos_token_id"] == [2, 7] and greedy["pad_token_id"] == 2 and "suppress_tokens" not in greedy
    sampled = to_transformers(GenerationConfig(do_sample=True, temperature=0.5, top_k=3, min_p=0.1), 10, [2])
    assert (sampled["temperature"], sampled["top_k"], sampled["min_p"]) == (0.5, 3, 0.1)


def test_sampling_seed_is_the_users_or_fresh() -> None:
    assert sampling_seed(GenerationConfig(do_sample=True, seed=1234)) == 1234
    drawn = {sampling_seed(GenerationConfig(do_sample=True)) for _ in range(8)}
    assert len(drawn) > 1, "an unseeded request must not reuse one constant seed"
