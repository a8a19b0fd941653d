"""Build the version-skew artifacts with the NEWEST builder, for ``test_skew.py`` to load with 0.13.1.

Usage (in the build environment: ``pip install -c plugins/phi3-dml/ci-constraints.txt ./core[testing]
"./plugins/phi3-dml[build,test]"``)::

    python plugins/phi3-dml/tests/skew/build_skew_artifacts.py OUT_DIR

Writes one phi3 artifact folder per case into OUT_DIR (built through ``phi3.quantize(..., output=)``,
exactly what a user ships to a Windows DirectML machine), the greedy ids the newest runtime
produces for each, the transformers fp32 reference, and ``expected.json`` describing it all. Two
deliberately bad copies check the old runtime's failures are clear phi3 errors:
``needs-newer`` (a manifest asking for the builder's runtime) and ``raw-builder-config`` (the
builder's own tokenizer_config.json, which 0.13.1 cannot read).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

PROMPT = "The quick brown fox"
CHAT = [{"role": "user", "content": "Hello, who are you?"}]
NEW_TOKENS = 20
CASES: dict[str, dict[str, Any]] = {
    "fp32-cpu": {"precision": "fp32"},
    "int4-cpu": {"precision": "int4"},
    "fp16-dml": {"precision": "fp16", "execution_provider": "dml"},
    "int4-dml": {"precision": "int4", "execution_provider": "dml"},
    "fp32-cpu-window": {"precision": "fp32", "model": "windowed"},
}


WINDOW = 8
"""Short enough that PROMPT + NEW_TOKENS crosses it: the old runtime must apply the graph's window."""


def _windowed(tiny: Path, out: Path) -> Path:
    """The tiny model with Phi-3-mini's kind of sliding window (built into the graph by phi3-dml)."""
    folder = out / "tiny-phi3-window"
    if not folder.exists():
        shutil.copytree(tiny, folder)
        config = json.loads((folder / "config.json").read_text())
        config["sliding_window"] = WINDOW
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


FAMILY = ("phi3-mini-128k", "phi4-mini")
"""Family layouts also checked under the old runtime: fp16 dml graphs, a prompt whose generation
crosses the LongRoPE switch (phi3-dml recomputes there), Phi-4-mini's tokenizer and tool tokens."""


def _family(out: Path, expected: dict[str, Any]) -> None:
    import phi3
    from phi3.testing.parity import parity_prompt
    from phi3.testing.reference import encode_prompt, reference_greedy_ids
    from phi3.testing.tiny_model import make_tiny_phi3

    for variant in FAMILY:
        source = make_tiny_phi3(out / f"tiny-{variant}", variant=variant)
        prompt = parity_prompt(source, variant, "longrope_decode")
        target = out / f"family-{variant}-fp16-dml"
        if target.exists():
            shutil.rmtree(target)
        phi3.quantize(source, backend="dml", precision="fp16", output=target, execution_provider="dml")
        expected["family"][variant] = {
            "artifact": target.name,
            "prompt": prompt,
            "reference_ids": reference_greedy_ids(
                source, input_ids=encode_prompt(source, prompt), max_new_tokens=NEW_TOKENS
            ),
        }
        print(f"built {target.name}")


def _rewrite(artifact: Path, name: str, edit: Any) -> None:
    """Edit one file of a copied artifact and keep its manifest's size record in step."""
    path = artifact / name
    edit(path)
    manifest_path = artifact / "phi3-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = path.stat().st_size
    manifest_path.write_text(json.dumps(manifest, indent=2))


def main(out: Path) -> None:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PHI3_HOME", str(out / "phi3-home"))
    os.environ["HF_HUB_OFFLINE"] = "1"

    import onnxruntime_genai
    import phi3
    from phi3.testing.reference import reference_greedy_ids
    from phi3.testing.tiny_model import make_tiny_phi3

    tiny = make_tiny_phi3(out / "tiny-phi3")
    models = {"tiny": tiny, "windowed": _windowed(tiny, out)}
    expected: dict[str, Any] = {
        "builder_version": onnxruntime_genai.__version__,
        "prompt": PROMPT,
        "messages": CHAT,
        "new_tokens": NEW_TOKENS,
        "reference_ids": reference_greedy_ids(tiny, PROMPT, max_new_tokens=NEW_TOKENS),
        "window_reference_ids": reference_greedy_ids(models["windowed"], PROMPT, max_new_tokens=NEW_TOKENS),
        "cases": {},
        "family": {},
    }
    for name, case in CASES.items():
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        options = {k: v for k, v in case.items() if k not in ("precision", "model")}
        phi3.quantize(
            models[case.get("model", "tiny")], backend="dml", precision=case["precision"], output=target, **options
        )
        with phi3.load(target, backend="dml", device="cpu") as model:
            result = model.generate(PROMPT, max_new_tokens=NEW_TOKENS, ignore_eos=True)
            expected["cases"][name] = {
                "ids": list(result.token_ids),
                "text": result.text,
                "chat_prompt": model.apply_chat_template(CHAT),
                "manifest": {
                    k: model.artifact.manifest.get(k)
                    for k in ("precision", "execution_provider", "runtime_min_version", "compat_changes")
                },
            }
        print(f"built {name}: {expected['cases'][name]['manifest']}")

    _family(out, expected)

    newer = out / "needs-newer"
    shutil.rmtree(newer, ignore_errors=True)
    shutil.copytree(out / "int4-cpu", newer)
    manifest = json.loads((newer / "phi3-manifest.json").read_text())
    manifest["runtime_min_version"] = expected["builder_version"]
    manifest["compat_unknown_keys"] = ["genai_config.json model.decoder.example_new_key"]
    (newer / "phi3-manifest.json").write_text(json.dumps(manifest, indent=2))

    raw = out / "raw-builder-config"
    shutil.rmtree(raw, ignore_errors=True)
    shutil.copytree(out / "int4-cpu", raw)

    def builder_tokenizer_class(path: Path) -> None:
        config = json.loads(path.read_text())
        config["tokenizer_class"] = "TokenizersBackend"  # what builder 0.18 + transformers 5 write
        path.write_text(json.dumps(config, indent=2))

    _rewrite(raw, "tokenizer_config.json", builder_tokenizer_class)
    (out / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False))
    print(f"wrote {out / 'expected.json'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
