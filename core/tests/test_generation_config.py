import math

import pytest

from phi3 import ConfigError, GenerationConfig
from phi3.generation_config import coerce_config, find_stop


def test_defaults_are_greedy_and_valid() -> None:
    config = GenerationConfig()
    assert config.do_sample is False
    assert config.max_new_tokens == 256
    assert config.stop == ()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": 0.0, "do_sample": True}, "do_sample=False"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": -5}, "seed"),
        ({"seed": 2**40}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"do_sample": "yes"}, "do_sample"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        GenerationConfig(**options)  # type: ignore[arg-type]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        GenerationConfig(max_new_tokens=0, top_p=2.0)
    assert "max_new_tokens" in str(info.value) and "top_p" in str(info.value)


def test_a_bare_stop_string_is_one_stop_not_characters() -> None:
    assert GenerationConfig(stop="###").stop == ("###",)  # type: ignore[arg-type]
    assert GenerationConfig(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_unknown_options_name_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="max_tokens") as info:
        GenerationConfig.from_options(max_tokens=3)
    assert "max_new_tokens" in (info.value.hint or "")


def test_from_options_ignores_unset_values_and_keeps_the_base() -> None:
    base = GenerationConfig(max_new_tokens=7, seed=3)
    merged = GenerationConfig.from_options(base, temperature=None, top_k=5)
    assert (merged.max_new_tokens, merged.seed, merged.top_k) == (7, 3, 5)
    assert base.replace(seed=4).seed == 4
    assert base.replace(seed=None).seed is None  # replace can clear; from_options ignores None
    with pytest.raises(ConfigError, match="bogus"):
        base.replace(bogus=1)
    with pytest.raises(ConfigError, match="top_p"):
        base.replace(top_p=7)


def test_coerce_accepts_mappings_and_rejects_other_types() -> None:
    assert coerce_config({"max_new_tokens": 3}, {"seed": 1}) == GenerationConfig(max_new_tokens=3, seed=1)
    with pytest.raises(ConfigError):
        coerce_config(42, {})  # type: ignore[arg-type]


def test_find_stop_returns_the_earliest_match() -> None:
    assert find_stop("abc STOP def END", ["END", "STOP"]) == 4
    assert find_stop("nothing here", ["END"]) == -1


@pytest.mark.parametrize("field", ["top_p", "repetition_penalty"])
def test_values_below_float32s_range_are_refused_and_the_smallest_normal_one_decodes(field: str) -> None:
    """1e-300 is 0.0 in the runtimes' float32: refused by phi3, naming the field and the range."""
    with pytest.raises(ConfigError, match=f"{field} must be a number in|{field} must be in"):
        GenerationConfig(**{field: 1e-300})  # type: ignore[arg-type]
    import phi3

    model = phi3.load("smoke", backend="reference", precision="fp32")
    sampling = {"do_sample": True, "temperature": 1.0, "seed": 1} if field == "top_p" else {}
    result = model.generate("Hello", max_new_tokens=3, ignore_eos=True, **{field: 1.2e-38}, **sampling)
    assert result.new_tokens == 3


@pytest.mark.parametrize("text", ["a\ud800b", "\udcff"])
def test_text_that_is_not_unicode_is_one_clear_error_before_any_backend(text: str) -> None:
    """A lone surrogate (undecodable argv bytes, a JSON "\\ud800") names the spot, for prompts and messages."""
    import phi3

    model = phi3.load("smoke", backend="reference", precision="fp32")
    with pytest.raises(ConfigError, match=r"not valid Unicode: a lone surrogate U\+D[89A-F]"):
        model.generate(text, max_new_tokens=2)
    with pytest.raises(ConfigError, match=r"message 1's content is not valid Unicode"):
        model.chat([{"role": "system", "content": "hi"}, {"role": "user", "content": text}], max_new_tokens=2)
