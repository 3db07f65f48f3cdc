"""Where a group's members are, and what its progress says (issue 30, items 2 and 3): after an
``alpha: auto`` search the chosen members are ``GROUP/m{i}-{model}`` (relative links into the
chosen alpha's directory) for every command taking a run; ``mutual`` prints where they are; its
progress names each alpha as its group starts and each member by index, model and seed."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mutualctr as mc
from mutualctr.cli import app
from tests.conftest import tiny_config

GRID = [0.5, 5.0]


def _cli(*args: str):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def searched(tiny_store, tmp_path_factory):
    """Two runs (seeds 3 and 4) and the CLI's alpha-auto finetuning of them into ``g``."""
    root = tmp_path_factory.mktemp("gpaths")
    cfg = replace(tiny_config(epochs=1), mutual=mc.MutualConfig(alpha_grid=GRID, epochs=1, evals_per_epoch=1))
    runs = [mc.train(tiny_store, root / f"r{s}", config=cfg, seed=s) for s in (3, 4)]
    cwd = os.getcwd()
    os.chdir(root)  # relative --out, as a user types it
    try:
        res = _cli("mutual", "--data", tiny_store, "--init", runs[0].run_dir, runs[1].run_dir, "--out", "g",
                   "--threads", "1")
    finally:
        os.chdir(cwd)
    return root, runs, res.output


def test_the_chosen_members_are_links_named_as_in_the_docs(searched):
    root, _, _ = searched
    g = json.loads((root / "g" / "group.json").read_text())
    chosen = f"alpha-{g['settings']['alpha']:g}"
    for i in range(2):
        link = root / "g" / f"m{i}-deepfm"
        assert link.is_symlink() and os.readlink(link) == f"{chosen}/m{i}-deepfm"  # relative: the group moves whole
        assert (link / "checkpoints" / "best.pt").is_file()
        assert g["members"][i]["run_dir"] == str(link)
        summary = json.loads((link / "summary.json").read_text())
        assert summary["run_dir"].endswith(f"{chosen}/m{i}-deepfm")


def test_mutual_prints_one_line_per_member_with_its_path(searched):
    root, _, out = searched
    g = json.loads((root / "g" / "group.json").read_text())
    chosen = f"alpha-{g['settings']['alpha']:g}"
    tail = out.splitlines()[-2:]
    assert tail == [f"m{i} deepfm -> {Path('g') / f'm{i}-deepfm'} (a link to {chosen}/m{i}-deepfm)"
                    for i in range(2)]


def test_progress_names_each_alpha_and_each_member(searched):
    root, _, out = searched
    lines = out.splitlines()
    heads = [ln for ln in lines if ln.startswith("alpha ")]
    tried = sorted(p.name for p in (root / "g").glob("alpha-*"))
    assert len(heads) == len(tried) >= 2
    assert heads[0] == f"alpha 0.5 (1 of 2 in the grid): {Path('g') / 'alpha-0.5'}"
    assert heads[1] == f"alpha 5 (2 of 2 in the grid): {Path('g') / 'alpha-5'}"
    assert all(re.fullmatch(r"alpha \S+ \(\d+: past the grid's end, which won\): g/alpha-\S+", h) for h in heads[2:])
    evals = [ln for ln in lines if ln.startswith("step ")]
    # the start and one evaluation per member and alpha; seeds are the runs' own (3 and 4)
    assert len(evals) == 2 * 2 * len(tried)
    assert all(re.search(r" (m0 deepfm s3|m1 deepfm s4): dev AUC ", ln) for ln in evals), evals
    first = lines.index(heads[0])
    assert lines[first + 1].startswith("step 0 ") and " m0 deepfm s3: " in lines[first + 1]


def test_every_command_taking_a_run_reads_the_member_links(searched, tiny_store, tmp_path):
    root, _, _ = searched
    m0, m1 = root / "g" / "m0-deepfm", root / "g" / "m1-deepfm"
    g = json.loads((root / "g" / "group.json").read_text())
    ev = json.loads(_cli("evaluate", "--run", m0, "--json").stdout)
    assert ev["auc"] == pytest.approx(g["members"][0]["test_auc"], abs=1e-12)
    raw = tmp_path / "rows.txt"
    mc.synth(50, raw, seed=5)
    assert "wrote 50 probabilities" in _cli("predict", "--run", m0, "--input", raw, "--out", tmp_path / "p.csv").stdout
    _cli("export", "--run", m1, "--out", tmp_path / "exp", "--format", "torchscript")
    assert (tmp_path / "exp" / "export.json").is_file()
    ens = json.loads(_cli("ensemble", "--runs", m0, m1, "--data", tiny_store, "--json").stdout)
    assert [m["run"] for m in ens["members"]] == [str(m0), str(m1)]
    again = json.loads(_cli("mutual", "--data", tiny_store, "--init", m0, m1, "--out", tmp_path / "g2",
                            "--alpha", "1", "--epochs", "1", "--threads", "1", "--quiet", "--json").stdout)
    assert again["settings"]["init"] == [str(m0), str(m1)]
    # a group with a fixed alpha holds its members itself: no links, the paths printed are theirs
    assert [m["run_dir"] for m in again["members"]] == [str(tmp_path / "g2" / f"m{i}-deepfm") for i in range(2)]
    assert not any(p.is_symlink() for p in (tmp_path / "g2").iterdir())


def test_a_missing_member_names_where_the_members_are(searched, tiny_store):
    root, _, _ = searched
    res = CliRunner().invoke(app, ["evaluate", "--run", str(root / "g" / "m0-dcn")])
    assert res.exit_code == 2
    assert f"{root / 'g' / 'm0-dcn'}: no such run directory; {root / 'g'} is a mutualctr group, its members " \
           f"are {root / 'g' / 'm0-deepfm'}, {root / 'g' / 'm1-deepfm'}" in res.output
    with pytest.raises(mc.MutualCTRError, match="its members are .*m0-deepfm"):
        mc.evaluate(root / "g" / "m2-deepfm", tiny_store)


def test_resume_and_a_second_group_keep_their_own_links(searched, tiny_store, tmp_path):
    root, runs, _ = searched
    before = json.loads((root / "g" / "group.json").read_text())
    res = _cli("mutual", "--data", tiny_store, "--init", runs[0].run_dir, runs[1].run_dir, "--out", root / "g",
               "--resume", "--threads", "1", "--json")
    assert json.loads(res.stdout) == before  # every alpha read back, the same links named
    assert os.readlink(root / "g" / "m0-deepfm").startswith("alpha-")
    g2 = mc.mutual(tiny_store, tmp_path / "g2", init=[r.run_dir for r in runs], threads=1)
    for i, m in enumerate(g2.members):
        link = tmp_path / "g2" / f"m{i}-deepfm"
        assert m.run_dir == str(link) and link.resolve().parent.parent == (tmp_path / "g2").resolve()
    # the group with its links is ours: a failed or replaced group removes the links with it
    from mutualctr import outdir

    assert outdir.check_replaceable(tmp_path / "g2", "group") == "ours"
    assert outdir.remove(tmp_path / "g2", "group") and not (tmp_path / "g2").exists()
    assert (root / "g" / "m0-deepfm" / "checkpoints" / "best.pt").is_file()  # others' untouched


def test_distill_ends_with_the_students_path(searched, tiny_store, tmp_path):
    root, runs, _ = searched
    res = _cli("distill", "--data", tiny_store, "--teacher", runs[0].run_dir, "--student", runs[1].run_dir,
               "--out", tmp_path / "d", "--beta", "1", "--epochs", "1", "--threads", "1")
    assert res.output.splitlines()[-1] == f"m0 deepfm -> {tmp_path / 'd' / 'm0-deepfm'}"
    assert any(" m0 deepfm s4: dev AUC " in ln for ln in res.output.splitlines())
