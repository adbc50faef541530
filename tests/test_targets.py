"""Target profiles: every file loads, aliases resolve, bad files are named precisely, wheels ship them."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgecls.base.errors import ConfigError
from edgecls.runtime.targets import (
    ENGINE_NAMES,
    PRECISIONS,
    Target,
    get_target,
    list_targets,
    load_target_file,
    target_from_dict,
    targets_dir,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_required_targets_exist():
    assert {"rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "host"} <= set(list_targets())


@pytest.mark.parametrize("name", list_targets())
def test_every_target_file_loads(name):
    target = get_target(name)
    assert isinstance(target, Target)
    assert target.name == name and Path(target.source).name == f"{name}.toml"
    assert target.engines and set(target.engines) <= set(ENGINE_NAMES)
    assert target.precisions and set(target.precisions) <= set(PRECISIONS)
    assert target.providers[-1] == "CPUExecutionProvider"  # always a fallback that exists
    assert target.install and target.description
    assert target.resolved_threads() >= 1
    if target.kind != "host":
        assert target.board and target.arch == "aarch64" and target.threads >= 1


def test_every_packaged_file_is_listed():
    assert sorted(path.stem for path in targets_dir().glob("*.toml")) == list_targets()


@pytest.mark.parametrize("name", list_targets())
def test_every_target_resolves_by_its_aliases_and_round_trips_as_a_dict(name):
    target = get_target(name)
    for alias in target.aliases:
        assert get_target(alias) == target
    document = json.loads(json.dumps(target.to_dict()))  # the JSON form a device gets (lists, not tuples)
    assert target_from_dict(document, source=target.source) == target


def test_aliases_and_device_specifics():
    assert get_target("rpi").name == "rpi5"
    assert get_target("jetson").name == "jetson-orin-nano"
    pi, jetson = get_target("rpi5"), get_target("jetson-orin-nano")
    assert pi.engines[0] == "litert" and pi.delegate == "XNNPACK" and pi.precisions[0] == "int8"
    assert jetson.engines[0] == "onnxruntime"
    assert jetson.providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert {"fp16", "int8"} <= set(jetson.precisions)


def test_unknown_target_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown target 'rpi9'.*jetson-orin-nano.*rpi5"):
        get_target("rpi9")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


def _valid_text() -> str:
    return (targets_dir() / "rpi5.toml").read_text()


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    path = _write(tmp_path, _valid_text() + "thread = 2\n")
    with pytest.raises(ConfigError) as error:
        load_target_file(path)
    message = str(error.value)
    assert str(path) in message and "'thread'" in message and "valid keys are:" in message and "threads" in message


@pytest.mark.parametrize(
    "change, key",
    [
        (("threads = 4", 'threads = "four"'), "threads"),
        (('engines = ["litert", "onnxruntime"]', 'engines = ["tensorflow"]'), "engines"),
        (('kind = "raspberry-pi"', 'kind = "toaster"'), "kind"),
        (('arch = "aarch64"\n', ""), "arch"),
    ],
)
def test_bad_values_and_missing_keys_name_the_key(tmp_path, change, key):
    text = _valid_text()
    assert change[0] in text
    path = _write(tmp_path, text.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError, match=rf"{path}.*'{key}'"):
        load_target_file(path)


def test_malformed_toml_names_the_file(tmp_path):
    path = _write(tmp_path, 'name = "x\n')
    with pytest.raises(ConfigError, match=rf"{path}: not a valid target file"):
        load_target_file(path)


def test_a_json_target_that_is_not_a_table_names_the_file(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=rf"{path}: a target file holds one table of keys"):
        load_target_file(path)


def test_a_target_file_by_path_and_the_json_form_a_device_gets(tmp_path):
    original = get_target("jetson-nano")
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(original.to_dict()))
    assert load_target_file(path) == Target(**{**original.to_dict(), "source": str(path)})
    toml_copy = tmp_path / "mine.toml"
    toml_copy.write_text((targets_dir() / "rpi4.toml").read_text())
    assert get_target(str(toml_copy)).name == "rpi4"


def test_top_level_targets_is_the_packaged_folder():
    assert (ROOT / "targets").resolve() == targets_dir().resolve()
    assert targets_dir().resolve() == (ROOT / "edgecls" / "runtime" / "targets").resolve()


def test_targets_command_lists_them():
    from typer.testing import CliRunner

    from edgecls.cli import app

    result = CliRunner().invoke(app, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    listed = {target["name"]: target for target in json.loads(result.output)["targets"]}
    assert set(listed) == set(list_targets())
    assert listed["rpi5"]["aliases"] == ["rpi"]


def test_targets_table_keeps_install_hints_whole():
    """Piped output is not folded at 80 columns, and 'edgecls[runtime]' is text, not rich markup."""
    from typer.testing import CliRunner

    from edgecls.cli import app

    result = CliRunner().invoke(app, ["targets"])
    assert result.exit_code == 0, result.output
    for name in list_targets():
        assert f"  {name}: {get_target(name).install}\n" in result.output
    assert "'edgecls[runtime]'" in result.output


@pytest.mark.slow
def test_an_installed_wheel_finds_the_targets(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheel").glob("edgecls-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        shipped = {
            Path(name).name
            for name in archive.namelist()
            if name.startswith("edgecls/runtime/targets/") and name.endswith(".toml")
        }
    assert {f"{name}.toml" for name in list_targets()} == shipped
    # Import from the unpacked wheel, not from the checkout.
    probe = "import edgecls.runtime.targets as t; print(t.targets_dir()); print(','.join(t.list_targets()))"
    command = [
        sys.executable,
        "-I",
        "-c",
        f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {probe}",
    ]  # -I: no checkout on the path
    completed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path)
    where, names = completed.stdout.strip().splitlines()
    assert where.startswith(str(tmp_path / "site")) and names.split(",") == list_targets()
