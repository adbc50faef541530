"""The box builder's decisions without building a box: the mirror it reads, its cache key, pip's index for the box."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
from box import build
from box.build import RECIPES, debian_mirror, host_pip_environment, recipe_key

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_is_the_machines_own_deb822(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"  # not the security suite's


def test_the_mirror_from_a_one_line_sources_list(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    lines = "# a comment\ndeb [arch=amd64 signed-by=/k.gpg] http://other.example/debian bookworm main contrib\n"
    (tmp_path / "sources.list").write_text(lines)
    assert debian_mirror(tmp_path) == "http://other.example/debian"


def test_no_bookworm_mirror_is_a_reason_to_skip(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    with pytest.raises(build.BoxUnavailable, match="no Debian bookworm mirror"):
        debian_mirror(tmp_path)


def test_the_key_follows_the_recipe_and_the_runtime_requirements(monkeypatch):
    recipe = RECIPES["pios32"]
    key = recipe_key(recipe)
    assert key == recipe_key(recipe) and key != recipe_key(RECIPES["pios64"])
    assert recipe_key(dataclasses.replace(recipe, apt=(*recipe.apt, "python3-psutil"))) != key
    requirements = build.runtime_requirements()
    changed = {**requirements, "runtime": [*requirements["runtime"], "pillow"]}
    monkeypatch.setattr(build, "runtime_requirements", lambda: changed)
    assert recipe_key(recipe) != key


def test_pip_in_the_box_gets_the_http_indexes_and_the_ca_bundle(monkeypatch):
    listed = (
        ":env:.index-url='https://pypi.example/simple'\n"
        "global.extra-index-url='file:///opt/pypi/simple https://extra.example/simple'\n"
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
    )
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, listed, ""))
    monkeypatch.delenv("https_proxy", raising=False)
    environment = host_pip_environment()
    assert environment["PIP_INDEX_URL"] == "https://pypi.example/simple"
    assert environment["PIP_EXTRA_INDEX_URL"] == "https://extra.example/simple"  # a file:// index is not in the box
    assert environment["PIP_CERT"] == build.BOX_CA
