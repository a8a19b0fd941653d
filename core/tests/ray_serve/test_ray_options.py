"""``phi3 serve --ray``'s options: checked before any cluster starts, one-line errors; and the
uvicorn runner never imports Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from phi3.cli import cli
from phi3.errors import ConfigError
from phi3.server.model_spec import Defaults
from phi3.server.ray_options import RayOptions, options_from_cli, parse_autoscale, parse_resources


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["smoke", "--replicas", "2"], "--replicas only apply with --ray"),
        (["smoke", "--ray-address", "127.0.0.1:6379"], "--ray-address only apply with --ray"),
        (["--ray", "smoke", "--replicas", "2", "--autoscale", "1:2"], "exclude each other"),
        (["--ray", "smoke", "--autoscale", "3"], "is not MIN:MAX"),
        (["--ray", "smoke", "--autoscale", "3:1"], "need 0 <= MIN <= MAX"),
        (["--ray", "smoke", "--ray-resource", "npu"], "is not NAME=AMOUNT"),
        (["--ray", "smoke", "--preload"], "--preload does not apply with --ray"),
        (["--ray"], "needs the MODELs to serve"),
        (["--ray", "smoke", "--ray-address", "127.0.0.1:1"], "cannot reach a Ray cluster at --ray-address"),
    ],
)
def test_bad_ray_options_are_one_line_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["serve", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1


def test_options_map_to_placement() -> None:
    assert parse_autoscale("0:4") == (0, 4)
    assert parse_resources(["npu=1", "igpu=0.5"]) == (("npu", 1.0), ("igpu", 0.5))
    options = options_from_cli(True, None, "1:3", None, ["npu=2"], None)
    assert options == RayOptions(autoscale=(1, 3), resources=(("npu", 2.0),))
    assert options_from_cli(False, None, None, None, [], None) is None
    # -d NPU asks for a node that advertises the npu resource; an explicit --ray-resource wins
    assert RayOptions().resources_for(Defaults(device="NPU")) == {"npu": 1.0}
    assert RayOptions().resources_for(Defaults(device="auto")) == {}
    assert RayOptions(resources=(("npu", 2.0),)).resources_for(Defaults(device="NPU")) == {"npu": 2.0}
    with pytest.raises(ConfigError):
        parse_resources(["npu=0"])


def test_the_uvicorn_runner_imports_no_ray() -> None:
    """``phi3 serve`` without --ray builds its app and never imports Ray (which is installed here)."""
    check = (
        "import json, sys\n"
        "from phi3.server.command import serve\n"
        "from phi3.server.app import ServerSettings, create_app\n"
        "create_app(ServerSettings(models=('smoke',)))\n"
        "import phi3.server.ray_options\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    done = subprocess.run(
        [sys.executable, "-c", "import ray.serve, sys; print('ray' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "True"  # the check above can see a Ray import
