"""Packaging: the lock pins the whole environment; the sdist and the wheel hold the code and the
shipped configs and nothing else; an installed wheel, used outside the checkout, trains with
the shipped configs. Nothing here touches the network or writes into the checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import mutualctr
from mutualctr.models import MODELS
from mutualctr.resources import schema_names
from mutualctr.training.config import load_run_config, run_config_to_dict, with_overrides
from mutualctr.training.device import native_bf16

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "src" / "mutualctr" / "configs"
VERSION = mutualctr.__version__


# ---- the lock ---------------------------------------------------------------------------


def _lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256, ...])} of a pip-compile --generate-hashes file."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert m, f"requirements.lock: not an exact pin with hashes: {line!r}"
        out[canonicalize_name(m[1])] = (m[2], re.findall(r"sha256:([0-9a-f]{64})", m[3]))
    return out


def _in_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            (spec,) = r.specifier
            assert spec.operator == "==", f"requirements.in pins exact versions: {line!r}"
            pins[canonicalize_name(r.name)] = spec.version
    return pins


LOCK = _lock_entries(REPO / "requirements.lock")


def test_lock_pins_every_package_with_hashes_and_the_cpu_torch():
    assert len(LOCK) >= 40
    for name, (version, hashes) in LOCK.items():
        assert hashes, f"{name}=={version} has no hash"
    assert LOCK["torch"][0] == "2.13.0+cpu"
    assert not [n for n in LOCK if n.startswith("nvidia-") or n == "triton"]  # no CUDA build
    for name, version in _in_pins(REPO / "requirements.in").items():
        assert LOCK[name][0].split("+")[0] == version, name


def _closure(roots: list[tuple[str, set[str]]]) -> dict[str, set[str]]:
    """Every distribution the roots need (markers evaluated here), with the specifiers asked."""
    env = default_environment()
    need: dict[str, set[str]] = {}
    todo = list(roots)
    seen = set()
    while todo:
        name, extras = todo.pop()
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        for raw in metadata.requires(name) or []:
            r = Requirement(raw)
            if r.marker and not any(r.marker.evaluate({**env, "extra": e}) for e in extras | {""}):
                continue
            key = canonicalize_name(r.name)
            need.setdefault(key, set()).add(str(r.specifier))
            todo.append((key, set(r.extras)))
    return need


def test_the_installed_environment_is_the_lock_and_the_lock_is_closed():
    """Every dependency of mutualctr (with its test extra), transitively, is locked at a version its
    dependents accept, and installed at exactly that version: nothing floats."""
    from packaging.specifiers import SpecifierSet

    need = _closure([("mutualctr", {"test"})])
    assert {"torch", "numpy", "filelock", "sympy", "networkx", "jinja2", "fsspec"} <= set(need)
    for name, specs in need.items():
        assert name in LOCK, f"{name} (needed as {specs}) is not in requirements.lock"
        locked = LOCK[name][0]
        for s in specs:
            assert SpecifierSet(s).contains(locked, prereleases=True), (name, s, locked)
    for name, (version, _) in LOCK.items():
        assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}, locked {version}"


# ---- sdist and wheel --------------------------------------------------------------------


def _shipped_files() -> list[str]:
    return sorted(str(p.relative_to(SHIPPED.parents[1])) for p in SHIPPED.rglob("*.yaml"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """sdist from a copy of the working tree, then the wheel from that sdist (as `python -m build`
    does), with the installed setuptools: no network, nothing written into the checkout."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src_copy"
    (src / "src").mkdir(parents=True)
    for f in ("pyproject.toml", "README.md", "MANIFEST.in"):
        if (REPO / f).is_file():
            shutil.copy2(REPO / f, src / f)
    shutil.copytree(REPO / "src" / "mutualctr", src / "src" / "mutualctr",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    dist = tmp / "dist"

    def backend(hook: str, cwd: Path) -> Path:
        code = f"from setuptools import build_meta as b; print(b.{hook}({str(dist)!r}))"
        p = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-3000:]
        return dist / p.stdout.strip().splitlines()[-1]

    sdist = backend("build_sdist", src)
    with tarfile.open(sdist) as t:
        t.extractall(tmp / "unpacked", filter="data")
    wheel = backend("build_wheel", tmp / "unpacked" / f"mutualctr-{VERSION}")
    return sdist, wheel


ALLOWED_DATA = {"mutualctr/reference/paper_tables.csv"}


def _check_package_files(names: list[str], prefix: str) -> None:
    files = [n[len(prefix):] for n in names if n.startswith(prefix) and not n.endswith("/")]
    assert sorted(f for f in files if f.endswith(".yaml")) == _shipped_files()
    assert len(_shipped_files()) == 2 * len(MODELS) + len(schema_names())
    odd = [f for f in files if not f.endswith((".py", ".yaml")) and f not in ALLOWED_DATA]
    assert odd == [], f"files that are neither code nor shipped configs: {odd}"
    assert not [f for f in files if "shared" in f or f.startswith("mutualctr/data/") and not f.endswith(".py")]


def test_sdist_and_wheel_hold_the_code_and_configs_and_no_data(built):
    sdist, wheel = built
    with tarfile.open(sdist) as t:
        names = [m.name for m in t.getmembers() if m.isfile()]
    top = f"mutualctr-{VERSION}/"
    outside = sorted({n[len(top):].split("/")[0] for n in names if n.startswith(top)} - {""})
    assert outside == ["PKG-INFO", "README.md", "pyproject.toml", "setup.cfg", "src"]
    _check_package_files([n for n in names if "egg-info" not in n], top + "src/")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(f"mutualctr-{VERSION}.dist-info/METADATA").decode()
        assert z.read("mutualctr/configs/criteo/deepfm.yaml") == (SHIPPED / "criteo" / "deepfm.yaml").read_bytes()
        assert sum(i.file_size for i in z.infolist()) < 2_000_000
    assert {n.split("/")[0] for n in names} == {"mutualctr", f"mutualctr-{VERSION}.dist-info"}
    _check_package_files([n for n in names if not n.startswith(f"mutualctr-{VERSION}.dist-info")], "")
    assert f"\nVersion: {VERSION}\n" in meta and "Requires-Dist: torch<=2.13.0,>=2.4" in meta


def _fresh_venv(root: Path) -> Path:
    """A venv outside the checkout that sees this environment's packages (torch, numpy, ...)
    through a .pth line, but not its editable mutualctr (.pth files of that directory are not run)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(subprocess.check_output([str(root / "bin" / "python"), "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "_project_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def test_an_installed_wheel_trains_with_the_shipped_criteo_config_outside_the_checkout(built, tmp_path):
    _, wheel = built
    venv = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} | {"PYTHONNOUSERSITE": "1"}
    work = tmp_path / "work"
    work.mkdir()

    def run(*cmd: str) -> subprocess.CompletedProcess:
        p = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True)
        assert p.returncode == 0, f"{cmd}: {p.stdout[-2000:]}{p.stderr[-2000:]}"
        return p

    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "mutualctr")
    run(py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel))
    where = run(py, "-c", "import mutualctr, mutualctr.resources as r; print(mutualctr.__file__); "
                          "print(r.configs_root())").stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where  # the wheel's copy, not the checkout's
    assert run(cli, "--version").stdout == f"mutualctr {VERSION}\n"

    run(cli, "data", "synth", "--rows", "2000", "--out", "raw.txt", "--seed", "0", "--quiet")
    run(cli, "prepare", "--dataset", "criteo", "--input", "raw.txt", "--out", "store", "--quiet")
    p = run(cli, "train", "--data", "store", "--model", "deepfm", "--out", "run", "--epochs", "1",
            "--device", "cpu", "--quiet")
    assert "warning:" not in p.stderr and "test AUC" in p.stdout
    got = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert got["optim"]["lr"] == 3e-3 and got["model"]["embedding_l2"] == 1e-5
    want = with_overrides(load_run_config(SHIPPED / "criteo" / "deepfm.yaml"), epochs=1, device="cpu")
    chosen = "bf16" if native_bf16(torch.device("cpu")) else "fp32"  # the default, auto, as recorded
    assert got == run_config_to_dict(replace(want, train=replace(want.train, precision=chosen)))
    assert (work / "run" / "checkpoints" / "best.pt").is_file()
