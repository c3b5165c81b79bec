"""Settings come from $CONVEYOR_HOME/config.yaml, and CONVEYOR_* variables win."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigError
from conveyor.pipelines.resources import Capacity
from conveyor.settings import load_settings


def test_home_holds_everything(tmp_path):
    settings = load_settings({"CONVEYOR_HOME": str(tmp_path / "h")})
    assert settings.db_url == f"sqlite:///{tmp_path / 'h' / 'conveyor.db'}"
    assert settings.storage_root == tmp_path / "h" / "folders"
    assert settings.runs_root == tmp_path / "h" / "runs"


def test_capacity_from_config_file_then_environment(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.yaml").write_text("capacity: {cpu: 8, mem: 32g, gpu: 2}\nkill_grace: 3\n")
    from_file = load_settings({"CONVEYOR_HOME": str(home)})
    assert from_file.capacity == Capacity(cpu=8, mem=32 * 1024**3, gpus=2)
    assert from_file.kill_grace == 3
    overridden = load_settings({"CONVEYOR_HOME": str(home), "CONVEYOR_CAPACITY": "gpu=4"})
    assert overridden.capacity == Capacity(cpu=8, mem=32 * 1024**3, gpus=4)


def test_detected_capacity_is_this_machine(tmp_path):
    detected = load_settings({"CONVEYOR_HOME": str(tmp_path)}).capacity
    assert detected.cpu >= 1 and detected.mem > 256 * 1024**2 and detected.gpus >= 0


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("capacity: [1, 2\n", "not valid YAML"), ("colour: blue\n", "colour"),
     ("capacity: cpu=many\n", "example: cpu=8")],
)
def test_bad_config_file_names_the_file(tmp_path, content, fragment):
    (tmp_path / "config.yaml").write_text(content)
    with pytest.raises(ConfigError, match=fragment) as raised:
        load_settings({"CONVEYOR_HOME": str(tmp_path)})
    assert str(raised.value).startswith(str(tmp_path / "config.yaml"))
