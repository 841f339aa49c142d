"""The platforms the package claims (README "Platforms"): package.xml's keys, and Python 3.10 as the floor.

package.xml's keys must resolve on every supported ROS distro; the code may use nothing newer than Python 3.10
(JetPack 6, Humble).

The rosdistro facts come from a snapshot next to the repository (``../shared/data/rosdistro``, or
``$DA3_ROSDISTRO``), read in place, never copied.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO

ROSDISTRO = Path(os.environ.get("DA3_ROSDISTRO", REPO.parent / "shared" / "data" / "rosdistro"))
DISTROS = ("humble", "jazzy", "kilted", "lyrical")
# The apt platforms the README's recipes use: Ubuntu (Tier 1 of every distro; JetPack 6 is Ubuntu 22.04) and
# Debian (this machine). RHEL/Fedora are not claimed: python3-torch has no rosdep rule there.
PLATFORMS = ("ubuntu", "debian")
DEPEND_TAGS = ("depend", "build_depend", "buildtool_depend", "exec_depend", "test_depend", "build_export_depend",
               "buildtool_export_depend", "doc_depend")
PYTHON_FLOOR = "3.10"
FLOOR_CHECKED = ["da3_ros", "benchmarks", "launch"]  # scripts/ holds shell only (checked below)


@pytest.fixture(scope="module")
def snapshot() -> dict:
    """The rosdistro snapshot (packages per distro, rosdep keys with their platforms and releases)."""
    path = ROSDISTRO / "rosdistro_snapshot.json"
    assert path.is_file(), f"rosdistro snapshot missing: {path} (set DA3_ROSDISTRO)"
    return json.loads(path.read_text())


def package_keys(package_xml: Path) -> list[tuple[str, str]]:
    """Every (tag, rosdep key) of a package.xml's dependency tags."""
    root = ET.parse(package_xml).getroot()
    return [(e.tag, (e.text or "").strip()) for e in root if e.tag in DEPEND_TAGS]


def unresolved(snapshot: dict, keys: list[str]) -> list[str]:
    """'<key> on <distro> (<platform> <release>)' for every key that a supported distro cannot resolve.

    A key resolves on a distro when it is one of the distro's released packages, or a rosdep key (base.yaml or
    python.yaml) with a rule for each of the distro's release platforms checked here: one for every release
    ('*', or an installer such as 'pip') or one naming the release.
    """
    rosdep = {**snapshot["rosdep"]["base"], **snapshot["rosdep"]["python"]}
    problems = []
    for distro in DISTROS:
        info = snapshot["distros"][distro]
        packages = set(info["packages"])
        for key in keys:
            if key in packages:
                continue
            rules = rosdep.get(key, {})
            for platform in PLATFORMS:
                for release in info["release_platforms"].get(platform, []):
                    defined = rules.get(platform, [])
                    if not ({"*", "pip", release} & set(defined)):
                        problems.append(f"{key} on {distro} ({platform} {release})")
    return problems


def test_every_package_xml_key_resolves_on_every_supported_distro(snapshot):
    keys = package_keys(REPO / "package.xml")
    assert len(keys) >= 15 and ("exec_depend", "python3-torch") in keys, keys  # the comparison is not empty
    assert set(DISTROS) <= set(snapshot["distros"]), sorted(snapshot["distros"])
    problems = unresolved(snapshot, [k for _, k in keys])
    commit = snapshot["commit"][:10]
    assert not problems, f"package.xml keys that rosdep cannot resolve (rosdistro {commit}): {problems}"


def test_a_key_missing_on_one_distro_is_reported_with_the_distro(snapshot):
    """The check can fail: a made-up key on every distro, a released package that one distro lacks."""
    released = {d: set(snapshot["distros"][d]["packages"]) for d in DISTROS}
    only_some = sorted(released["humble"] & released["jazzy"] & released["kilted"] - released["lyrical"])
    assert only_some, "expected a package released on humble, jazzy and kilted but not on lyrical in the snapshot"
    problems = unresolved(snapshot, ["rclpy", "python3-numpy", "da3_made_up_key", only_some[0]])
    assert [p for p in problems if p.startswith("da3_made_up_key on ")] and all(
        any(p.startswith(f"da3_made_up_key on {d} ") for p in problems) for d in DISTROS)
    missing_one = [p for p in problems if p.startswith(f"{only_some[0]} on ")]
    assert missing_one and all(" on lyrical " in p for p in missing_one), problems
    assert not [p for p in problems if p.startswith(("rclpy ", "python3-numpy "))], problems
    # a rosdep key with no rule for one distro's Ubuntu release: python3-torch minus its '*' rule
    patched = json.loads(json.dumps(snapshot))
    patched["rosdep"]["python"]["python3-torch"] = {"ubuntu": ["jammy"], "debian": ["*"]}
    assert unresolved(patched, ["python3-torch"]) == ["python3-torch on jazzy (ubuntu noble)",
                                                      "python3-torch on kilted (ubuntu noble)",
                                                      "python3-torch on lyrical (ubuntu resolute)"]


def vermin_floor(*paths: str | Path) -> subprocess.CompletedProcess:
    """Run vermin on paths: exit 1 where a file needs a Python newer than the floor (syntax or standard library)."""
    vermin = shutil.which("vermin")
    assert vermin, "vermin is installed by scripts/setup.sh (requirements/test.txt)"
    return subprocess.run([vermin, "--no-tips", "--violations", f"--target={PYTHON_FLOOR}-", "--eval-annotations",
                           "--no-parse-comments", *map(str, paths)], cwd=REPO, capture_output=True, text=True)


def ruff_floor(*paths: str | Path) -> list[str]:
    """Ruff's syntax errors for the floor version: the syntax newer than this interpreter (PEP 695, ...)."""
    ruff = shutil.which("ruff")
    assert ruff
    out = subprocess.run([ruff, "check", "--isolated", "--no-cache", "--output-format", "concise", "--select", "E9",
                          "--target-version", "py" + PYTHON_FLOOR.replace(".", ""), *map(str, paths)],
                         cwd=REPO, capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "invalid-syntax" in line or "SyntaxError" in line]


def test_the_code_runs_on_python_3_10():
    """No syntax nor standard-library use newer than 3.10 (JetPack 6's Python) in the package, benchmarks, launch."""
    assert "python_requires = >=3.10\n" in (REPO / "setup.cfg").read_text()
    assert not list((REPO / "scripts").glob("*.py")), "scripts/ gained Python: add it to FLOOR_CHECKED"
    files = [p for d in FLOOR_CHECKED for p in (REPO / d).rglob("*.py")]
    assert len(files) > 50
    out = vermin_floor(*FLOOR_CHECKED)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Minimum required versions: 3." in out.stdout, out.stdout  # it analysed something
    assert not ruff_floor(*FLOOR_CHECKED)


SNIPPETS = {
    "tomllib.py": "import tomllib\n",
    "utc.py": "import datetime\n\nNOW = datetime.datetime.now(datetime.UTC)\n",
    "self.py": "from typing import Self\n",
    "strenum.py": "from enum import StrEnum\n",
    "except_star.py": "try:\n    pass\nexcept* ValueError:\n    pass\n",
    "taskgroup.py": "import asyncio\n\nasync def f():\n    async with asyncio.TaskGroup():\n        pass\n",
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_a_construct_newer_than_3_10_is_flagged(tmp_path, name):
    """The floor check can fail: each 3.11-only construct is named; the same file without it passes."""
    bad = tmp_path / name
    bad.write_text(SNIPPETS[name])
    out = vermin_floor(bad)
    assert out.returncode == 1 and "3.11" in out.stdout and "Target versions not met" in out.stdout, out.stdout
    good = tmp_path / "ok.py"
    good.write_text("import datetime\n\nNOW = datetime.datetime.now(datetime.timezone.utc)\n")
    assert vermin_floor(good).returncode == 0


def test_syntax_newer_than_this_interpreter_is_flagged(tmp_path):
    """PEP 695 (3.12) does not parse on 3.11, so vermin cannot judge it; ruff at the floor version does."""
    bad = tmp_path / "generic.py"
    bad.write_text("def first[T](xs: list[T]) -> T:\n    return xs[0]\n\n\ntype Pair = tuple[int, int]\n")
    found = ruff_floor(bad)
    assert len(found) == 2 and all("3.12" in line for line in found), found
