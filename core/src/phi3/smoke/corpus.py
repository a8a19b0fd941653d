"""The synthetic corpus the smoke model is trained on, generated deterministically.

Every example is a chat (OpenAI-style messages, possibly with tools) whose last assistant turn is
the target the model learns to write. The tasks are deliberately small, so a model of a few MB
learns them in minutes on a CPU:

- greetings, "who are you", thanks and goodbyes (fixed answers);
- facts from a small built-in table (capitals, legs of animals, colours);
- arithmetic with one-digit numbers (``+``, ``-``, ``*`` on 0..9: a table a tiny model can learn);
- two-turn conversations (the model remembers a name it was told);
- JSON answers to "as JSON" requests (compact JSON, as phi3's structured output decodes it);
- tool use in phi3's constrained tool format for Phi-3 layouts (:mod:`phi3.tools`): the tools are
  described in the system turn by :func:`phi3.tools.generic_prompt`, the answer is
  ``{"tool_calls":[...]}`` or (``tool_choice="auto"``) ``{"response":"..."}``, and a tool result
  comes back as a user turn holding ``{"tool_response": {...}}``; the prompts are rendered by
  :func:`phi3.tools.generic_messages` itself, so training sees exactly what phi3 sends;
- a little raw text (facts as sentences) for plain completions.

Nothing here imports torch: it is plain Python on :mod:`random` with a fixed seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ANIMAL_LEGS",
    "CAPITALS",
    "COLOURS",
    "IDENTITY",
    "WEATHER_TOOL",
    "Example",
    "compact",
    "examples",
    "held_out",
]

IDENTITY: Final = (
    "I am smoke, a tiny Phi-3 model trained on a small synthetic corpus. "
    "I can greet you, answer simple questions, do small sums and call tools."
)
GREETING: Final = "Hello! How can I help you today?"
THANKS: Final = "You are welcome!"
BYE: Final = "Goodbye! Have a nice day."
UNKNOWN: Final = "I am sorry, I do not know that. I am a tiny model and only know a few facts."

CAPITALS: Final[dict[str, str]] = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Portugal": "Lisbon",
    "Greece": "Athens",
    "Ireland": "Dublin",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Brazil": "Brasilia",
    "Peru": "Lima",
    "Australia": "Canberra",
    "Russia": "Moscow",
}
ANIMAL_LEGS: Final[dict[str, int]] = {
    "spider": 8,
    "dog": 4,
    "cat": 4,
    "horse": 4,
    "bird": 2,
    "ant": 6,
    "bee": 6,
    "snake": 0,
    "fish": 0,
    "chicken": 2,
}
COLOURS: Final[dict[str, str]] = {
    "the sky": "blue",
    "grass": "green",
    "snow": "white",
    "a banana": "yellow",
    "coal": "black",
    "a tomato": "red",
    "an orange": "orange",
}
NAMES: Final = (
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Ida", "Jonas",
    "Karin", "Leo", "Maria", "Nils", "Olga", "Paul", "Rosa", "Sam", "Tom", "Alice", "Bob", "Eva",
)  # fmt: skip
CITIES: Final = tuple(dict.fromkeys([*CAPITALS.values(), "London", "New York", "Bergen", "Munich", "Lyon", "Osaka"]))
CONDITIONS: Final = ("sunny", "cloudy", "rainy", "windy", "snowing", "foggy", "clear")

WEATHER_TOOL: Final[dict[str, Any]] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
"""The tool the README, the tests and the agent example offer."""


@dataclass(frozen=True)
class Example:
    """One chat and what the model should answer to it."""

    messages: tuple[Mapping[str, Any], ...]
    answer: str
    """The assistant's text: plain words, or compact JSON when ``json`` is set."""
    task: str
    tools: tuple[Mapping[str, Any], ...] | None = None
    tool_choice: Any = None
    json: bool = False
    """The answer is JSON (decoded without a leading space, as structured output does)."""
    raw: bool = False
    """A plain-text document (no chat template): ``messages`` holds one user turn with the prefix."""
    extra: Mapping[str, Any] = field(default_factory=dict)


def compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- tools ------------------------------------------------------------------------------------------


def _weather_tool(rng: random.Random) -> dict[str, Any]:
    description = rng.choice(
        [
            "Get the current weather in a city.",
            "Get the current weather for a city.",
            "Look up the weather in a given city.",
            "Returns the weather of a city.",
            "",
        ]
    )
    city: dict[str, Any] = rng.choice(
        [
            {"type": "string"},
            {"type": "string", "description": "The city name"},
            {"type": "string", "description": "City, e.g. Paris"},
            {"title": "City", "type": "string"},
        ]
    )
    parameters = rng.choice(
        [
            {"type": "object", "properties": {"city": city}, "required": ["city"]},
            {"properties": {"city": city}, "required": ["city"], "type": "object"},
            {"type": "object", "properties": {"city": city}, "required": ["city"], "additionalProperties": False},
        ]
    )
    return {
        "type": "function",
        "function": {"name": "get_weather", "description": description, "parameters": parameters},
    }


def _time_tool(rng: random.Random) -> dict[str, Any]:
    description = rng.choice(["Get the local time in a city.", "Returns the current time in a city.", ""])
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": "get_time", "description": description, "parameters": parameters}}


def _add_tool(rng: random.Random) -> dict[str, Any]:
    description = rng.choice(["Add two numbers.", "Add two small integers.", "Returns a + b."])
    number = rng.choice([{"type": "integer"}, {"type": "number"}, {"type": "integer", "minimum": 0, "maximum": 9}])
    parameters = {"type": "object", "properties": {"a": number, "b": number}, "required": ["a", "b"]}
    return {"type": "function", "function": {"name": "add", "description": description, "parameters": parameters}}


def _capital_tool(rng: random.Random) -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}
    return {
        "type": "function",
        "function": {
            "name": "get_capital",
            "description": "Look up the capital of a country.",
            "parameters": parameters,
        },
    }


_TOOL_MAKERS: Final = {
    "get_weather": _weather_tool,
    "get_time": _time_tool,
    "add": _add_tool,
    "get_capital": _capital_tool,
}


def _toolset(rng: random.Random, needed: str | None) -> list[dict[str, Any]]:
    names = [n for n in _TOOL_MAKERS if n != needed]
    rng.shuffle(names)
    chosen = names[: rng.choice([0, 0, 0, 0, 1])]
    if needed is not None:
        chosen.insert(rng.randrange(len(chosen) + 1), needed)
    elif not chosen:
        chosen = [rng.choice(list(_TOOL_MAKERS))]
    return [_TOOL_MAKERS[name](rng) for name in chosen]


def _call_id(rng: random.Random) -> str:
    return "call_" + "".join(rng.choice("0123456789abcdef") for _ in range(24))


# -- question makers: (question, plain answer, json answer or None, task) ---------------------------


def _greeting(rng: random.Random) -> tuple[str, str]:
    question = rng.choice(["Hi!", "Hi", "Hello!", "Hello", "Hey there!", "Hi there", "Good morning!", "Hello there."])
    return question, GREETING


def _identity(rng: random.Random) -> tuple[str, str]:
    question = rng.choice(
        [
            "Who are you?",
            "What are you?",
            "What is your name?",
            "Tell me about yourself.",
            "Who are you",
            "Introduce yourself.",
        ]
    )
    return question, IDENTITY


def _small_talk(rng: random.Random) -> tuple[str, str]:
    return rng.choice(
        [
            ("Thanks!", THANKS),
            ("Thank you.", THANKS),
            ("Thank you very much!", THANKS),
            ("Bye!", BYE),
            ("Goodbye.", BYE),
            ("How are you?", "I am fine, thank you! How can I help you?"),
            (
                "Tell me about AI PCs.",
                "AI PCs have an NPU, a GPU and a CPU, so they can run small models like me locally.",
            ),
            ("What can you do?", IDENTITY),
            ("What is the meaning of life?", UNKNOWN),
            ("Write a poem about the sea.", UNKNOWN),
            ("Why is the sky blue?", "The sky is blue because air scatters blue light more than red light."),
        ]
    )


def _capital(rng: random.Random, country: str) -> tuple[str, str]:
    question = rng.choice(
        [
            "What is the capital of {c}?",
            "What's the capital of {c}?",
            "Capital of {c}?",
            "Which city is the capital of {c}?",
            "Tell me the capital of {c}.",
            "what is the capital of {c}",
        ]
    ).format(c=country)
    return question, f"The capital of {country} is {CAPITALS[country]}."


def _legs(rng: random.Random, animal: str) -> tuple[str, str]:
    question = rng.choice(["How many legs does a {a} have?", "How many legs has a {a}?", "Number of legs of a {a}?"])
    n = ANIMAL_LEGS[animal]
    return question.format(a=animal), f"A {animal} has {n} legs." if n else f"A {animal} has no legs."


def _colour(rng: random.Random, thing: str) -> tuple[str, str]:
    question = rng.choice(["What colour is {t}?", "What color is {t}?", "Which colour is {t}?"]).format(t=thing)
    subject = thing[0].upper() + thing[1:]
    return question, f"{subject} is {COLOURS[thing]}."


def _plus(a: int, b: int) -> int:
    return a + b


def _minus(a: int, b: int) -> int:
    return a - b


def _times(a: int, b: int) -> int:
    return a * b


_OPS: Final[dict[str, tuple[str, Callable[[int, int], int]]]] = {
    "+": ("plus", _plus),
    "-": ("minus", _minus),
    "*": ("times", _times),
}


def _numbers(rng: random.Random, op: str) -> tuple[int, int]:
    """Two one-digit operands (never a negative difference)."""
    a = rng.randint(0, 9)
    return a, rng.randint(0, a) if op == "-" else rng.randint(0, 9)


def _arithmetic(rng: random.Random, op: str, a: int, b: int) -> tuple[str, str]:
    word = _OPS[op][0]
    symbol = rng.choice(["x", "*"]) if op == "*" else op
    question = rng.choice(
        [
            "What is {a} {s} {b}?",
            "What is {a} {w} {b}?",
            "How much is {a} {s} {b}?",
            "Compute {a} {s} {b}.",
            "{a} {s} {b} = ?",
            "Calculate {a} {w} {b}.",
            "what is {a}{s}{b}",
        ]
    ).format(a=a, b=b, s=symbol, w=word)
    return question, f"{a} {op} {b} = {_OPS[op][1](a, b)}."


def _fact(rng: random.Random) -> tuple[str, str, str]:
    """A question the model answers from its table (or a sum), as (question, answer, task)."""
    kind = rng.choices(["capital", "legs", "colour", "arith"], weights=[4, 1, 1, 4])[0]
    if kind == "capital":
        q, a = _capital(rng, rng.choice(list(CAPITALS)))
    elif kind == "legs":
        q, a = _legs(rng, rng.choice(list(ANIMAL_LEGS)))
    elif kind == "colour":
        q, a = _colour(rng, rng.choice(list(COLOURS)))
    else:
        op = rng.choice(list(_OPS))
        q, a = _arithmetic(rng, op, *_numbers(rng, op))
    return q, a, kind


def _any_plain(rng: random.Random) -> tuple[str, str, str]:
    kind = rng.choices(["greeting", "identity", "small", "fact"], weights=[1, 1, 1, 5])[0]
    if kind == "greeting":
        return (*_greeting(rng), "greeting")
    if kind == "identity":
        return (*_identity(rng), "identity")
    if kind == "small":
        return (*_small_talk(rng), "small_talk")
    return _fact(rng)


# -- example makers ---------------------------------------------------------------------------------

_SYSTEMS: Final = (
    None, None, None, None,
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly.",
    "Be brief.",
    "You are smoke, a tiny assistant.",
)  # fmt: skip


def _with_system(rng: random.Random, messages: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    system = rng.choice(_SYSTEMS)
    return tuple(([{"role": "system", "content": system}] if system else []) + messages)


def _chat_example(rng: random.Random) -> Example:
    q, a, task = _any_plain(rng)
    return Example(_with_system(rng, [{"role": "user", "content": q}]), a, task)


def _multi_turn_example(rng: random.Random) -> Example:
    """Two or three turns; the last question may depend on an earlier turn (a name)."""
    kind = rng.choice(["name", "name", "name", "two"])
    if kind == "name":
        name = rng.choice(NAMES)
        intro = rng.choice(["My name is {n}.", "I am {n}.", "Hi, I'm {n}.", "Hello, my name is {n}."]).format(n=name)
        turns: list[dict[str, Any]] = [
            {"role": "user", "content": intro},
            {"role": "assistant", "content": f"Nice to meet you, {name}! How can I help you?"},
        ]
        if rng.random() < 0.5:
            q, a, _ = _any_plain(rng)
            turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        question = rng.choice(["What is my name?", "What's my name?", "Do you remember my name?", "Who am I?"])
        turns.append({"role": "user", "content": question})
        return Example(_with_system(rng, turns), f"Your name is {name}.", "multi_turn")
    q1, a1, _ = _any_plain(rng)
    q2, a2, _ = _any_plain(rng)
    turns = [
        {"role": "user", "content": q1},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": q2},
    ]
    return Example(_with_system(rng, turns), a2, "multi_turn")


def _json_example(rng: random.Random) -> Example:
    kind = rng.choice(["capital", "arith", "person", "person", "legs"])
    suffix = rng.choice([" as JSON", ", as JSON", " Answer as JSON.", " Reply in JSON.", " (JSON)"])
    if kind == "capital":
        country = rng.choice(list(CAPITALS))
        q = rng.choice(["The capital of {c}", "What is the capital of {c}?", "Capital of {c}"]).format(c=country)
        answer: object = {"country": country, "capital": CAPITALS[country]}
    elif kind == "arith":
        op = rng.choice(list(_OPS))
        a, b = _numbers(rng, op)
        q, _ = _arithmetic(rng, op, a, b)
        answer = {"answer": _OPS[op][1](a, b)}
    elif kind == "legs":
        animal = rng.choice(list(ANIMAL_LEGS))
        q = f"How many legs does a {animal} have?"
        answer = {"animal": animal, "legs": ANIMAL_LEGS[animal]}
    else:
        name = rng.choice(NAMES)
        if rng.random() < 0.5:
            q, answer = name, {"name": name}
        else:
            age = rng.randint(2, 90)
            q = rng.choice(["{n}, {a} years old", "{n} is {a} years old", "{n}, age {a}"]).format(n=name, a=age)
            answer = {"name": name, "age": age}
    q = q.rstrip(".?") + suffix if suffix.startswith((" as", ", as")) else q + suffix
    return Example(_with_system(rng, [{"role": "user", "content": q}]), compact(answer), "json", json=True)


def _weather_question(rng: random.Random, city: str) -> str:
    return rng.choice(
        [
            "What is the weather in {c}?",
            "What's the weather in {c}?",
            "weather in {c}?",
            "Weather in {c}?",
            "How is the weather in {c}?",
            "Is it raining in {c}?",
            "What's the weather like in {c} today?",
            "Tell me the weather in {c}.",
        ]
    ).format(c=city)


def _weather_result(rng: random.Random, city: str) -> tuple[str, str]:
    """A weather tool's result and how the model reports it."""
    condition, temp = rng.choice(CONDITIONS), rng.randint(-10, 35)
    style = rng.choice(["words", "words", "json", "sentence"])
    if style == "words":
        content = f"{condition}, {temp} degrees"
    elif style == "json":
        content = json.dumps({"city": city, "condition": condition, "temperature": temp})
    else:
        content = f"It is {condition} and {temp} degrees in {city}."
    return content, f"The weather in {city} is {condition}, {temp} degrees."


def _tool_example(rng: random.Random) -> Example:
    """A chat with tools in phi3's constrained format (rendered later by phi3.tools.generic_messages)."""
    kind = rng.choices(["call", "answer", "result", "forced"], weights=[5, 2, 4, 1])[0]
    history: list[dict[str, Any]] = []
    system = rng.choice(_SYSTEMS)
    if system:
        history.append({"role": "system", "content": system})
    if kind == "answer":  # tools offered, but the question needs none
        tools = _toolset(rng, None)
        q, a, task = _any_plain(rng)
        if task == "arith" and any(t["function"]["name"] == "add" for t in tools):
            q, a = _greeting(rng)
        history.append({"role": "user", "content": q})
        return Example(tuple(history), compact({"response": a}), "tool_answer", tuple(tools), "auto", json=True)
    tool = rng.choices(["get_weather", "get_time", "add", "get_capital"], weights=[6, 2, 2, 1])[0]
    tools = _toolset(rng, tool)
    city = rng.choice(CITIES)
    if tool == "get_weather":
        arguments: dict[str, Any] = {"city": city}
        question = _weather_question(rng, city)
    elif tool == "get_time":
        question = rng.choice(["What time is it in {c}?", "What's the time in {c}?", "Time in {c}?"]).format(c=city)
        arguments = {"city": city}
    elif tool == "add":
        x, y = rng.randint(0, 9), rng.randint(0, 9)
        question = rng.choice(
            ["Add {a} and {b}.", "Use the tool to add {a} and {b}.", "What is {a} + {b}? Use a tool."]
        )
        question, arguments = question.format(a=x, b=y), {"a": x, "b": y}
    else:
        country = rng.choice(list(CAPITALS))
        question, arguments = f"Look up the capital of {country}.", {"country": country}
    history.append({"role": "user", "content": question})
    call = {"tool_calls": [{"name": tool, "arguments": arguments}]}
    choice: Any = "auto"
    if kind == "forced":
        choice = rng.choice(["required", {"type": "function", "function": {"name": tool}}])
    if kind != "result":
        return Example(tuple(history), compact(call), "tool_call", tuple(tools), choice, json=True)
    call_id = _call_id(rng)
    history.append(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": tool, "arguments": json.dumps(arguments)}}
            ],
        }
    )
    if tool == "get_weather":
        content, answer = _weather_result(rng, city)
    elif tool == "get_time":
        hour, minute = rng.randint(0, 23), rng.choice([0, 5, 15, 20, 30, 45, 50])
        content = f"{hour:02d}:{minute:02d}"
        answer = f"It is {content} in {city}."
    elif tool == "add":
        content = str(arguments["a"] + arguments["b"])
        answer = f"{arguments['a']} + {arguments['b']} = {content}."
    else:
        content = CAPITALS[arguments["country"]]
        answer = f"The capital of {arguments['country']} is {content}."
    history.append({"role": "tool", "tool_call_id": call_id, "content": content})
    return Example(tuple(history), compact({"response": answer}), "tool_result", tuple(tools), "auto", json=True)


def _raw_example(rng: random.Random) -> Example:
    """Plain text for completions: a fact sentence split after its first words."""
    _, sentence, _ = _fact(rng)
    words = sentence.split(" ")
    cut = rng.randint(1, max(1, len(words) - 1))
    prefix, rest = " ".join(words[:cut]), " " + " ".join(words[cut:])
    return Example(({"role": "user", "content": prefix},), rest, "raw", raw=True)


def _echo_example(rng: random.Random) -> Example:
    """Say back a few words (names, cities, numbers): short, cheap examples that teach copying."""
    pool = [*NAMES, *CITIES, *CAPITALS, *CONDITIONS, *(str(n) for n in range(40))]
    words = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
    text = " ".join(words)
    question = rng.choice(["Say {w}.", "Repeat after me: {w}", "Please say: {w}", "Echo {w}"]).format(w=text)
    if rng.random() < 0.3:
        return Example(
            ({"role": "user", "content": question + " as JSON"},), compact({"text": text}), "echo", json=True
        )
    return Example(({"role": "user", "content": question},), text + ".", "echo")


_MAKERS: Final = (
    (_echo_example, 12),
    (_chat_example, 30),
    (_multi_turn_example, 12),
    (_json_example, 12),
    (_tool_example, 40),
    (_raw_example, 6),
)


def examples(n: int, seed: int = 0) -> Iterator[Example]:
    """``n`` training examples, the same for the same ``(n, seed)``."""
    rng = random.Random(seed)
    makers = [maker for maker, _ in _MAKERS]
    weights = [weight for _, weight in _MAKERS]
    for _ in range(n):
        yield rng.choices(makers, weights=weights)[0](rng)


# -- held-out evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A held-out prompt and how an answer is judged (exact match on the expected text or call)."""

    task: str
    messages: tuple[Mapping[str, Any], ...]
    expected: str
    """Plain text; for tool tasks the expected call (compact JSON) or response text."""
    tools: tuple[Mapping[str, Any], ...] | None = None
    tool_choice: Any = None
    json_schema: Mapping[str, Any] | None = None


def held_out(seen: Sequence[str] = (), seed: int = 12345) -> list[Probe]:
    """Evaluation prompts phrased as a user would, none of them a training prompt verbatim.

    ``seen`` holds the user texts of the training set (so an overlap is skipped). The same tools and
    questions the README and tests use are included.
    """
    rng = random.Random(seed)
    seen_set = set(seen)
    probes: list[Probe] = []

    def user(text: str) -> tuple[dict[str, Any], ...]:
        return ({"role": "user", "content": text},)

    novel = [
        ("arith", "Please tell me: what is {a} + {b}?", "+"),
        ("arith", "Could you compute {a} plus {b}?", "+"),
        ("arith", "What is {a} times {b}, please?", "*"),
    ]
    for task, template, op in novel:
        for _ in range(6):
            a, b = _numbers(rng, op)
            q = template.format(a=a, b=b)
            expected = f"{a} {op} {b} = {_OPS[op][1](a, b)}."
            probes.append(Probe(task, user(q), expected))
    for _ in range(12):
        op = rng.choice(list(_OPS))
        q, said = _arithmetic(rng, op, *_numbers(rng, op))
        if q not in seen_set:
            probes.append(Probe("arith", user(q), said))
    for country in rng.sample(list(CAPITALS), 10):
        q = rng.choice(
            ["Do you know the capital of {c}?", "Name the capital of {c}.", "What is the capital city of {c}?"]
        )
        probes.append(Probe("capital", user(q.format(c=country)), f"The capital of {country} is {CAPITALS[country]}."))
    probes.append(Probe("identity", user("Hey, who are you?"), IDENTITY))
    probes.append(Probe("greeting", user("Hello, good evening!"), GREETING))
    for name in rng.sample(list(NAMES), 4):
        turns: tuple[dict[str, Any], ...] = (
            {"role": "user", "content": f"Hi! My name is {name}."},
            {"role": "assistant", "content": f"Nice to meet you, {name}! How can I help you?"},
            {"role": "user", "content": "Can you tell me my name?"},
        )
        probes.append(Probe("multi_turn", turns, f"Your name is {name}."))
    for country in rng.sample(list(CAPITALS), 4):
        schema = {
            "type": "object",
            "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
            "required": ["country", "capital"],
        }
        probes.append(
            Probe(
                "json",
                user(f"Give me the capital of {country} as JSON."),
                compact({"country": country, "capital": CAPITALS[country]}),
                json_schema=schema,
            )
        )
    for city in rng.sample(list(CITIES), 6):
        q = rng.choice(
            ["Can you check the weather in {c}?", "I am going to {c}. What's the weather there?", "weather in {c}?"]
        )
        call = compact([{"name": "get_weather", "arguments": {"city": city}}])
        probes.append(Probe("tool_call", user(q.format(c=city)), call, (WEATHER_TOOL,), "auto"))
    for city in rng.sample(list(CITIES), 4):
        condition, temp = rng.choice(CONDITIONS), rng.randint(0, 30)
        call_id = _call_id(rng)
        turns = (
            {"role": "user", "content": f"What is the weather in {city}?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": f"{condition}, {temp} degrees"},
        )
        probes.append(
            Probe(
                "tool_result", turns, f"The weather in {city} is {condition}, {temp} degrees.", (WEATHER_TOOL,), "auto"
            )
        )
    return probes
