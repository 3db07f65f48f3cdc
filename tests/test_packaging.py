"""Packaging: the lock pins the whole environment. Nothing here touches the network or writes
into the checkout."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


REPO = Path(__file__).resolve().parents[1]


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
