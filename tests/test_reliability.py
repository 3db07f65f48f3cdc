"""Issue 14, table-driven: each hostile or careless use of the CLI gets one clear line and exit 2
with nothing written, or a documented success. docs/reliability.md lists the same cases.

Each :class:`Case` runs ``mutualctr ARGS`` as its own process: ``mutualctr.cli.main()`` in a
child forked from a forkserver that has imported the CLI and torch once (a fresh
``python -m mutualctr`` costs 1-8 s of imports per row on a shared 2-core machine), or, for rows
with ``wrap`` (e.g. ``setpriv``), a real ``python -m mutualctr`` subprocess. In ``args``,
``{raw}`` is (the absolute path of) a 300-row Criteo file in the case's directory, ``{store}``
a store prepared from it (shared by the module: do not write into it), ``{tmp}`` the case's
directory (the cwd unless ``cwd`` names a folder inside it).

A failing row (exit != 0) also checks that the command wrote nothing: the case directory's
files and links (paths, sizes, mtimes, targets) are the same before and after. To add a row,
append a ``Case`` to ``CASES``; ``setup(ctx)`` prepares the directory, ``check(ctx, result)``
asserts more (``result`` has ``code``, ``out``, ``err``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from mutualctr import atomic, outdir
from mutualctr.data.prepare import prepare
from mutualctr.data.store import Store
from mutualctr.errors import ConfigError, MutualCTRError, OutputError

from .data.helpers import criteo_rows, write_tsv

ROOT = Path(__file__).resolve().parents[1]


# -- running the CLI ------------------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str


def _cli_child(argv: list[str], cwd: str, out: str, err: str) -> None:  # runs in the forked child
    import traceback

    os.chdir(cwd)
    os.environ["COLUMNS"] = "200"  # rich: no wrapping of the summary lines
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = ["mutualctr", *argv]
    code = 0
    try:
        from mutualctr.cli import main

        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_FORK = multiprocessing.get_context("forkserver")
# what the commands import (torch and torch._dynamo: ~4 s), once for all rows
_FORK.set_forkserver_preload(["mutualctr.cli", "mutualctr.data.prepare", "mutualctr.training.jobs",
                              "mutualctr.models", "mutualctr.training.trainer"])


def run_cli(args: list[str], cwd: Path, wrap: list[str] = (), timeout: float = 300) -> Result:
    """``mutualctr ARGS`` in ``cwd`` as a separate process: exit code, stdout, stderr."""
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    if wrap:
        env = {**os.environ, "COLUMNS": "200"}
        p = subprocess.run([*wrap, sys.executable, "-m", "mutualctr", *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr)
    import tempfile

    with tempfile.TemporaryDirectory(dir=logs) as d:
        out, err = os.path.join(d, "out"), os.path.join(d, "err")
        proc = _FORK.Process(target=_cli_child, args=(list(args), str(cwd), out, err))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise AssertionError(f"mutualctr {' '.join(args)}: still running after {timeout} s")
        return Result(proc.exitcode, Path(out).read_text(), Path(err).read_text())


def tree(root: Path) -> dict[str, tuple]:
    """Files and links under ``root`` (directories by presence: a lock created and removed
    changes a directory's mtime, not its content)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            kind = stat.S_IFMT(st.st_mode)
            key = str(p.relative_to(root))
            if stat.S_ISDIR(kind):
                out[key] = ("dir",)
            elif stat.S_ISLNK(kind):
                out[key] = ("link", os.readlink(p))
            else:
                out[key] = ("file", st.st_size, st.st_mtime_ns)
    return out


# -- a prepare that stops mid-way (inside its temporary directory) ------------------------------
def _paused_child(raw: str, out: str, kw: dict, conn) -> None:  # runs in the forked child
    import time

    from mutualctr.data import fields, prepare as prep

    real = fields.write_vocab

    def paused(path, values, counts):
        real(path, values, counts)
        conn.send("PAUSED")
        time.sleep(600)

    fields.write_vocab = paused
    prep.prepare("criteo", [Path(raw)], Path(out), progress=False, **kw)


def paused_prepare(raw: Path, out: Path, **kw):
    """A prepare process stopped after it has written into its temporary directory."""
    ours, theirs = _FORK.Pipe()
    p = _FORK.Process(target=_paused_child, args=(str(raw), str(out), kw, theirs))
    p.start()
    if not ours.poll(120) or ours.recv() != "PAUSED":
        p.kill()
        raise AssertionError("the paused prepare did not pause")
    return p


def killed_prepare(raw: Path, out: Path, **kw) -> None:
    """A prepare killed with SIGKILL mid-way: its temporaries stay behind (checked)."""
    p = paused_prepare(raw, out, **kw)
    p.kill()  # SIGKILL
    p.join()
    left = [e for e in os.listdir(out.parent) if e.startswith(f".{out.name}.")]
    assert any(e.endswith(".tmp") for e in left), left  # the leak of issue 14 item 4


def temporaries(d: Path) -> list[str]:
    return sorted(e for e in os.listdir(d) if e.startswith(".") and
                  (e.endswith((".tmp", ".old", ".del", ".lock"))))


# -- cases ----------------------------------------------------------------------------------------
@dataclass
class Ctx:
    tmp: Path
    raw: Path
    store: Path
    children: list = field(default_factory=list)

    def prepare(self, out: str, **kw) -> Store:
        return prepare("criteo", [self.raw], self.tmp / out, progress=False, **kw).store


@dataclass
class Case:
    id: str
    args: str  # shell words; {raw}, {store}, {tmp} substituted
    code: int
    message: str  # fragment of stderr (code != 0) or stdout (code == 0)
    setup: Callable[[Ctx], None] | None = None
    check: Callable[[Ctx, Result], None] | None = None
    cwd: str = ""  # relative to the case directory
    wrap: tuple[str, ...] = ()  # run as `WRAP... python -m mutualctr ARGS`
    skip: Callable[[], str | None] | None = None  # reason to skip, if any


PREP = "prepare --dataset criteo --input {raw} --quiet --out"


def _two_months(d: Path) -> None:
    """t.csv: 300 rows a month in January and February 2020 (Unix seconds in ``ts``), and t.yaml."""
    (d / "t.yaml").write_text("label: y\ncategorical: [a]\ndrop: [ts]\n")
    rows = [f"{i % 2},a{i % 7},{1577836800 + (i // 300) * 2678400 + i}" for i in range(600)]
    (d / "t.csv").write_text("y,a,ts\n" + "\n".join(rows) + "\n")


def _holder(path: str, conn) -> None:  # runs in the forked child
    import time

    with outdir.locked(Path(path)):
        conn.send("HELD")
        time.sleep(600)


def _lock_held(name: str):
    """Another process holds the writer's lock of ``name`` while the command runs."""
    def setup(ctx):
        ours, theirs = _FORK.Pipe()
        p = _FORK.Process(target=_holder, args=(str((ctx.tmp / name).resolve()), theirs))
        p.start()
        assert ours.poll(120) and ours.recv() == "HELD"
        ctx.children.append(p)
    return setup


def _read_only_run(ctx):
    shutil.copytree(ctx.store.parent / "run", ctx.tmp / "r")
    for d, _, files in os.walk(ctx.tmp / "r"):
        for f in files:
            os.chmod(Path(d, f), 0o444)
    for d, _, _ in os.walk(ctx.tmp / "r", topdown=False):
        os.chmod(d, 0o555)


def _one_class_store(ctx):
    rows = criteo_rows(300)
    for r in rows:
        r[0] = "0"
    prepare("criteo", [write_tsv(ctx.tmp / "n.txt", rows)], ctx.tmp / "n", progress=False)


def _precious(ctx):
    (ctx.tmp / "precious").mkdir()
    (ctx.tmp / "precious" / "thesis.txt").write_text("four years of work")


def _store_plus_file(ctx):
    ctx.prepare("st")
    (ctx.tmp / "st" / "thesis.txt").write_text("four years of work")


def _linked_store(ctx):
    ctx.prepare("target")
    (ctx.tmp / "link").symlink_to("target")


def _check_linked(ctx, r):
    assert (ctx.tmp / "link").is_symlink() and os.readlink(ctx.tmp / "link") == "target"
    assert Store.open(ctx.tmp / "target").feature_map.settings["seed"] == 5
    assert temporaries(ctx.tmp) == [], temporaries(ctx.tmp)


def _check_replaced(ctx, r):
    assert Store.open(ctx.tmp / "st").feature_map.settings["seed"] == 4
    assert temporaries(ctx.tmp) == []


def _writer_at_work(ctx):
    ctx.children.append(paused_prepare(ctx.raw, ctx.tmp / "st"))


def _check_writer_named(ctx, r):
    assert f"(pid {ctx.children[0].pid})" in r.err
    assert not (ctx.tmp / "st").exists()


def _killed(ctx):
    killed_prepare(ctx.raw, ctx.tmp / "st")


def _killed_overwrite(ctx):
    ctx.prepare("st")
    killed_prepare(ctx.raw, ctx.tmp / "st", seed=7, overwrite=True)


def _killed_between_renames(ctx):
    """What a replace killed between its two renames leaves: the old store parked as .old."""
    ctx.prepare("st")
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.replace(ctx.tmp / "st", ctx.tmp / f".st.{atomic.host_id()}-{dead.pid}-1.old")


def _check_clean(ctx, r):
    assert temporaries(ctx.tmp) == [], temporaries(ctx.tmp)
    assert Store.open(ctx.tmp / "st").rows("train") == 240


def _cwd_store(ctx):
    ctx.prepare("st")


def _file(name, text="x\n"):
    def setup(ctx):
        (ctx.tmp / name).write_text(text)
    return setup


def _read_only(ctx):
    (ctx.tmp / "ro").mkdir()
    os.chmod(ctx.tmp / "ro", 0o555)


def _no_setpriv():
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        return "root without setpriv: a read-only folder cannot be simulated"
    return None


_WRAP_RO = (("setpriv", "--inh-caps=-dac_override,-dac_read_search",
             "--bounding-set=-dac_override,-dac_read_search") if os.geteuid() == 0 else ())


def _criteo_file(name, edit):
    def setup(ctx):
        rows = criteo_rows(30)
        edit(rows)
        write_tsv(ctx.tmp / name, rows)
    return setup


def _cell(row, col, value):
    def edit(rows):
        rows[row][col] = value
    return edit


def _column(col, value):
    def edit(rows):
        for r in rows:
            r[col] = value
    return edit


def _labels(value):
    def edit(rows):
        for r in rows:
            r[0] = value
    return edit


def _rows5(rows):
    del rows[5:]


def _check_vocab(field, want):
    def check(ctx, r):
        assert want in Store.open(ctx.tmp / "n").vocab(field).to_pylist()
    return check


def _check_one_class(ctx, r):
    st = Store.open(ctx.tmp / "n")
    assert "every label of the train split" in st.split_problem("train")
    with pytest.raises(MutualCTRError, match="train split .* is 0"):
        st.require_both_classes("train")


def _yaml(name, text):
    return _file(name, text)


_RUN = "model: {name: lr}\n"
TRAIN = "train --data {store} --out r --quiet --model lr"
CONFIG = "train --data {store} --out r --quiet --config c.yaml"


def _config_case(id, yaml_line, message):
    """``train --config c.yaml`` where c.yaml is an lr run config plus ``yaml_line``."""
    return Case(id, CONFIG, 2, f"c.yaml: {message}", _yaml("c.yaml", f"{_RUN}{yaml_line}\n"))


def _criteo_case(id, edit, code, message, flags="", check=None):
    """``prepare`` of n.txt: 30 Criteo rows changed by ``edit``."""
    return Case(id, f"prepare --dataset criteo --input n.txt --out n --quiet {flags}".strip(), code,
                message, _criteo_file("n.txt", edit), check)
MUTUAL = "mutual --data {store} --out g --quiet --models lr,lr"


# -- issue 28: nothing we write destroys what is not ours ------------------------------------------
def _run_copy(ctx, name="r"):
    shutil.copytree(ctx.store.parent / "run", ctx.tmp / name)


def _run_without_last(ctx):
    _run_copy(ctx)
    (ctx.tmp / "r" / "checkpoints" / "last.pt").unlink()


def _group(ctx, command="mutual", extra=("--alpha", "1")):
    """A finished group (``mutual``) or distillation (``distill``) of the shared run in ``g``."""
    run = str(ctx.store.parent / "run")
    members = ["--init", run, run] if command == "mutual" else ["--teacher", run, "--student", "lr"]
    r = run_cli([command, "--data", str(ctx.store), *members, "--out", "g", "--epochs", "1", "--quiet",
                 "--threads", "1", *extra], ctx.tmp)
    assert r.code == 0, r


def _random_bytes(name, n=3000, seed=0):
    def setup(ctx):
        import random

        (ctx.tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx.tmp / name).write_bytes(random.Random(seed).randbytes(n))
    return setup


def _no_weights_only_advice(ctx, r):
    assert "weights_only" not in r.err and "Re-running" not in r.err, r.err


def _experiment_files(results: str | None):
    """``x/`` holding a stats.json and a results.csv of ``results`` (None: random bytes)."""
    def setup(ctx):
        from mutualctr.experiments.report import FIELDS

        (ctx.tmp / "x").mkdir()
        (ctx.tmp / "x" / "stats.json").write_text("{}")
        if results is None:
            _random_bytes("x/results.csv")(ctx)
        else:
            (ctx.tmp / "x" / "results.csv").write_text(",".join(FIELDS) + "\n" + results)
    return setup


def _edited_store(edit):
    """A copy of the shared store in ``st`` whose feature_map.json ``edit(dict) -> text`` rewrote."""
    def setup(ctx):
        shutil.copytree(ctx.store, ctx.tmp / "st")
        fm = ctx.tmp / "st" / "feature_map.json"
        fm.write_text(edit(json.loads(fm.read_text())))
    return setup


def _names_the_schemas(r):
    assert "was prepared with dataset 'criteo', whose schema differs from 'k.yaml' in" in r.err, r.err


def _run_damaged_last(ctx):
    _run_copy(ctx)
    os.truncate(ctx.tmp / "r" / "checkpoints" / "last.pt", 10000)  # a copy cut short


def _export(ctx, name="e"):
    from mutualctr.serving import export_run

    export_run(ctx.store.parent / "run", ctx.tmp / name, format="torchscript")


def _export_plus_user_files(ctx):
    _export(ctx)
    (ctx.tmp / "e" / "notes.txt").write_text("mine")
    (ctx.tmp / "e" / "mydata").mkdir()
    (ctx.tmp / "e" / "mydata" / "x.csv").write_text("1,2\n")


def _forged_export(ctx, extra=True):
    e = ctx.tmp / "e"
    e.mkdir()
    (e / "export.json").write_text('{"format":"mutualctr-export"}\n')
    if extra:
        (e / "README").write_text("my project\n")
        (e / "src").mkdir()
        (e / "src" / "main.py").write_text("print('mine')\n")


def _export_edited(ctx):
    _export(ctx)
    with open(ctx.tmp / "e" / "encoder.json", "a") as f:
        f.write(" ")


def _check_exported_fm(ctx, r):
    from mutualctr.serving import read_manifest

    m = read_manifest(ctx.tmp / "e")
    assert sorted(m["files"]) == ["encoder.json", "model.pt"], m["files"]
    assert sorted(os.listdir(ctx.tmp / "e")) == ["encoder.json", "export.json", "model.pt"]
    assert temporaries(ctx.tmp) == []


def _predictions(ctx):
    (ctx.tmp / "p.csv").write_text("probability\n0.500000\n0.250000\n")


def _check_predictions(ctx, r):
    lines = (ctx.tmp / "p.csv").read_text().splitlines()
    assert lines[0] == "probability" and len(lines) == 301
    assert temporaries(ctx.tmp) == []


def _user_runs_folder(ctx):
    (ctx.tmp / "mine").mkdir()
    (ctx.tmp / "mine" / "notes.txt").write_text("mine")


EXPERIMENT = "experiment rq1 --data {store} --out x --models lr --instances 2 --epochs 1 --quiet --threads 1"
EXPORT = "export --run {run} --format torchscript --out"
PREDICT = "predict --run {run} --input {raw} --out"

_KINDS = "label: y\ncategorical: [item]\nmulti_valued: {g: {max_length: 2}}\ndense: {p: {}}\n"


def _kinds_table(cell=None, schema=_KINDS):
    """``k.yaml`` (item categorical, g multi-valued of max length 2, p dense) and 40 rows ``k.csv``;
    ``cell`` = (row, column, text) replaces one cell (row 0 is line 2)."""
    def setup(ctx):
        rows = [[str(i % 2), str(i % 5), "a|b" if i % 3 else "c", str(i / 4)] for i in range(40)]
        if cell is not None:
            rows[cell[0]][cell[1]] = cell[2]
        (ctx.tmp / "k.yaml").write_text(schema)
        (ctx.tmp / "k.csv").write_text("y,item,g,p\n" + "".join(",".join(r) + "\n" for r in rows))
    return setup


def _kinds_parquet(ctx):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"y": [0, 1] * 10, "item": ["x"] * 20, "g": list(range(20)), "p": [1.0] * 20}),
                   ctx.tmp / "k.parquet")
    (ctx.tmp / "k.yaml").write_text("format: parquet\n" + _KINDS)


KPREP = "prepare --dataset k.yaml --input k.csv --quiet --out n"
PPREP = "prepare --dataset p.yaml --input p.parquet --quiet --out n"


def _parquet(item, schema="label: y\ncategorical: [item]\n"):
    """``p.parquet`` of 20 rows with column ``item`` = ``item`` (a pyarrow array) and ``p.yaml``."""
    def setup(ctx):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"y": [0, 1] * 10, "item": item(pa)}), ctx.tmp / "p.parquet")
        (ctx.tmp / "p.yaml").write_text("format: parquet\n" + schema)
    return setup


def _bad_utf8(pa):
    """A string column whose row 6 holds bytes that are not UTF-8 (written unvalidated)."""
    raw = pa.array([b"a\xff\xfe" if i == 5 else b"a" for i in range(20)], pa.binary())
    return pa.Array.from_buffers(pa.string(), 20, raw.buffers())


_USER = "tests.models.user_models"
_TRAIN_USER = "train --data {store} --out r --quiet --device cpu"


def _user_runs(ctx: Ctx) -> None:
    """``u1``, ``u2``: two runs of the test model Plain (one epoch), for ``mutual --init``."""
    from mutualctr.training import jobs  # lazy: as the shared fixture's
    from mutualctr.training.config import run_config_from_dict

    for seed in (1, 2):
        cfg = run_config_from_dict({"model": {"name": f"{_USER}:Plain"}, "train": {
            "epochs": 1, "batch_size": 64, "device": "cpu", "prefetch": 0, "seed": seed}})
        jobs.train(ctx.store, ctx.tmp / f"u{seed}", cfg, quiet=True)


def _user_config(model: str) -> Callable[[Ctx], None]:
    """``u.yaml``: a run config of user model ``model`` (a YAML mapping under ``model``)."""
    return _file("u.yaml", f"model: {model}\ntrain: {{epochs: 1, batch_size: 64, prefetch: 0}}\n")


CASES = [
    # 2. --overwrite replaces only what is ours
    Case("overwrite-foreign-dir", f"{PREP} precious --overwrite", 2,
         "precious: exists and is not a mutualctr store (it holds 'thesis.txt')", _precious),
    Case("foreign-dir-no-overwrite", f"{PREP} precious", 2,
         "--overwrite replaces only a store that mutualctr wrote", _precious),
    Case("overwrite-store-holding-user-file", f"{PREP} st --overwrite --seed 4", 2,
         "st: is a mutualctr store but also holds 'thesis.txt'", _store_plus_file),
    Case("overwrite-own-store", f"{PREP} st --overwrite --seed 4", 0, "prepared store st",
         _cwd_store, _check_replaced),
    Case("overwrite-through-symlink", f"{PREP} link --overwrite --seed 5", 0, "prepared store link",
         _linked_store, _check_linked),
    Case("out-is-a-file", f"{PREP} f.txt --overwrite", 2, "f.txt: is a file, not a directory",
         _file("f.txt")),
    # 3. one writer per --out
    Case("second-writer", f"{PREP} st", 2,
         "st: another mutualctr process (pid", _writer_at_work, _check_writer_named),
    # 4. temporaries of killed writers
    Case("after-kill-9", f"{PREP} st", 0, "prepared store st", _killed, _check_clean),
    Case("after-kill-9-of-overwrite", f"{PREP} st", 0, "reused existing store st",
         _killed_overwrite, _check_clean),
    Case("after-kill-9-between-renames", f"{PREP} st", 0, "reused existing store st",
         _killed_between_renames, _check_clean),
    # 5./6. bad values from flags and from YAML: same message, exit 2, nothing written
    Case("train-epochs-0", f"{TRAIN} --epochs 0", 2, "error: train.epochs must be >= 1, got 0"),
    Case("train-threads-negative", f"{TRAIN} --threads -1", 2,
         "error: --threads must be >= 0 (0: torch's default), got -1"),
    Case("train-batch-size-0", f"{TRAIN} --batch-size 0", 2, "train.batch_size must be >= 1, got 0"),
    Case("train-lr-negative", f"{TRAIN} --lr -1", 2, "optim.lr must be > 0, got -1.0"),
    Case("train-lr-nan", f"{TRAIN} --lr nan", 2, "optim.lr must be a finite number, got nan"),
    Case("train-lr-inf", f"{TRAIN} --lr inf", 2, "optim.lr must be a finite number, got inf"),
    Case("train-device-unknown", f"{TRAIN} --device gpu", 2,
         "train.device: expected one of 'auto' | 'cpu' | 'cuda', got 'gpu'"),
    Case("mutual-lr-0", f"{MUTUAL} --lr 0", 2, "optim.lr must be > 0, got 0.0"),
    Case("mutual-epochs-0", f"{MUTUAL} --epochs 0", 2, "train.epochs must be >= 1, got 0"),
    Case("mutual-alpha-negative", f"{MUTUAL} --alpha -1", 2, "mutual.alpha must be >= 0, got -1.0"),
    Case("mutual-alpha-nan", f"{MUTUAL} --alpha nan", 2, "mutual.alpha must be a finite number, got nan"),
    _config_case("yaml-lr-nan", "optim: {lr: .nan}", "optim.lr must be a finite number, got nan"),
    _config_case("yaml-decay-epochs-0", "optim: {decay_epochs: 0}",
                 "optim.decay_epochs must be > 0, got 0.0"),
    _config_case("yaml-beta1", "optim: {beta1: 1.5}", "optim.beta1 must be in [0, 1), got 1.5"),
    _config_case("yaml-beta2", "optim: {beta2: 1}", "optim.beta2 must be in [0, 1), got 1.0"),
    _config_case("yaml-eps", "optim: {eps: -1}", "optim.eps must be > 0, got -1.0"),
    _config_case("yaml-plateau-factor", "optim: {plateau_factor: 2}",
                 "optim.plateau_factor must be in (0, 1], got 2.0"),
    _config_case("yaml-plateau-patience", "optim: {plateau_patience: 0}",
                 "optim.plateau_patience must be >= 1, got 0"),
    _config_case("yaml-threads", "train: {threads: -4}", "train.threads must be >= 0, got -4"),
    _config_case("yaml-prefetch", "train: {prefetch: -1}", "train.prefetch must be >= 0, got -1"),
    _config_case("yaml-epochs-0-same-as-flag", "train: {epochs: 0}", "train.epochs must be >= 1, got 0"),
    # 7. duplicate keys
    Case("run-yaml-duplicate-key", CONFIG, 2,
         "c.yaml:4:3: invalid YAML: duplicate key 'epochs' (first on line 3)",
         _yaml("c.yaml", _RUN + "train:\n  epochs: 1\n  epochs: 2\n")),
    Case("schema-yaml-duplicate-key", "prepare --dataset s.yaml --input {raw} --out n --quiet", 2,
         "s.yaml:3:1: invalid YAML: duplicate key 'label' (first on line 2)",
         _yaml("s.yaml", "format: csv\nlabel: y\nlabel: z\n")),
    # 8. numbers at the edges
    _criteo_case("int64-overflow", _cell(2, 1, "99999999999999999999999"), 2,
                 "n.txt:3: column I1: '99999999999999999999999' is out of range (integers must fit"),
    _criteo_case("int64-overflow-skipped", _cell(2, 1, "99999999999999999999999"), 0,
                 "rows rejected: 1  (first: n.txt:3)", "--on-bad-rows skip"),
    _criteo_case("int64-min-accepted", _column(2, "-9223372036854775808"), 0, "rows rejected: 0",
                 "--min-count 1", _check_vocab("I2", -9223372036854775808)),
    _criteo_case("int-plus-sign", _column(2, "+1"), 0, "rows rejected: 0", "--min-count 1",
                 _check_vocab("I2", 1)),
    _criteo_case("int-hex-refused", _cell(2, 1, "0x10"), 2, "n.txt:3: column I1: '0x10' is not an integer"),
    _criteo_case("int-inf-refused", _cell(2, 1, "inf"), 2, "n.txt:3: column I1: 'inf' is not an integer"),
    _criteo_case("int-nan-refused", _cell(2, 1, "nan"), 2, "n.txt:3: column I1: 'nan' is not an integer"),
    _criteo_case("int-minus-zero", _column(2, "-0"), 0, "rows rejected: 0", "--min-count 1",
                 _check_vocab("I2", 0)),
    # 9. file-system errors and misleading messages
    Case("out-in-read-only-folder", f"{PREP} ro/st", 2, "ro/st: cannot write in", _read_only,
         wrap=_WRAP_RO, skip=_no_setpriv),
    Case("out-dangling-symlink", f"{PREP} dangling", 2,
         "dangling: is a symbolic link to nowhere, which does not exist",
         lambda ctx: (ctx.tmp / "dangling").symlink_to("nowhere")),
    Case("out-is-cwd", "prepare --dataset criteo --input {raw} --quiet --out . --overwrite --seed 3",
         2, ".: is the current directory", _cwd_store, cwd="st"),
    Case("out-is-parent-of-cwd", f"{PREP} .. --overwrite", 2, "..: is a parent of the current directory",
         lambda ctx: (ctx.tmp / "sub").mkdir(), cwd="sub"),
    Case("out-below-a-file", f"{PREP} f.txt/st", 2, "is a file, not a directory", _file("f.txt")),
    Case("out-holds-input", "prepare --dataset criteo --input d/c.txt --out d --overwrite --quiet", 2,
         "d: holds the input d/c.txt",
         lambda ctx: ((ctx.tmp / "d").mkdir(), shutil.copy(ctx.raw, ctx.tmp / "d" / "c.txt"))),
    Case("input-is-a-directory", "prepare --dataset criteo --input d --out n --quiet", 2,
         "d: is a directory, not a file", lambda ctx: (ctx.tmp / "d").mkdir()),
    Case("store-is-a-file", "train --data {raw} --out r --quiet --model lr", 2,
         "is a file, not a store directory"),
    Case("schema-is-a-directory", "prepare --dataset d --input {raw} --out n --quiet", 2,
         "not 'criteo', 'avazu' or an existing schema YAML file", lambda ctx: (ctx.tmp / "d").mkdir()),
    # 10. degenerate data
    _criteo_case("five-rows", _rows5, 2, "n.txt: 5 rows give train"),
    _criteo_case("one-class-labels", _labels("0"), 0, "prepared store n", "", _check_one_class),
    # the same rules for runs and groups (train, mutual, predict)
    Case("train-out-foreign-dir", f"{TRAIN.replace('--out r', '--out precious')}", 2,
         "precious: exists and is not a mutualctr run (it holds 'thesis.txt')", _precious),
    Case("train-out-dangling-symlink", f"{TRAIN.replace('--out r', '--out dangling')}", 2,
         "dangling: is a symbolic link to nowhere, which does not exist",
         lambda ctx: (ctx.tmp / "dangling").symlink_to("nowhere")),
    Case("train-second-writer", TRAIN, 2, "r: another mutualctr process (pid", _lock_held("r")),
    Case("train-resume-missing-run", "train --data {store} --out nothere --resume --quiet", 2,
         "nothere: no run to resume here (no config.yaml)"),
    Case("train-nproc-negative", f"{TRAIN} --nproc -1", 2, "--nproc must be >= 1, got -1"),
    Case("mutual-group-of-one", "mutual --data {store} --init {run} --out g --quiet --alpha 1", 2,
         "a group needs at least two members"),
    Case("mutual-alpha-word", f"{MUTUAL} --alpha often", 2, "mutual.alpha: expected number | 'auto', got 'often'"),
    Case("mutual-scope-unknown", "mutual --data {store} --init {run} {run} --out g --quiet --scope sparse", 2,
         "mutual.scope: expected one of 'all' | 'dense', got 'sparse'"),
    Case("predict-out-is-a-directory", "predict --run {run} --input {raw} --out d", 2,
         "d: is a directory; pass a file name", lambda ctx: (ctx.tmp / "d").mkdir()),
    Case("train-resume-read-only-run", "train --data {store} --out r --resume --quiet", 2,
         "r: cannot write config.yaml there (Permission denied)", _read_only_run, wrap=_WRAP_RO, skip=_no_setpriv,
         check=lambda ctx, r: os.chmod(ctx.tmp / "r", 0o755)),
    Case("train-one-class-labels", "train --data n --out r --quiet --model lr", 2,
         "every label of the train split", _one_class_store),
    # issue 28: every output path follows one rule (mutualctr.outdir)
    Case("predict-out-is-the-input", f"{PREDICT} {{raw}}", 2, "c.txt: is the input"),
    Case("predict-out-is-a-checkpoint", f"{PREDICT} r/checkpoints/best.pt", 2,
         "r/checkpoints/best.pt: is inside the mutualctr run", _run_copy),
    Case("predict-out-in-a-store", f"{PREDICT} st/train.X.npy", 2, "st/train.X.npy: is inside the mutualctr store",
         lambda ctx: ctx.prepare("st")),
    Case("predict-out-in-a-run", f"{PREDICT} r/p.csv", 2, "r/p.csv: is inside the mutualctr run", _run_copy),
    Case("predict-out-user-file", f"{PREDICT} notes.txt", 2,
         "notes.txt: exists and is not a predictions file mutualctr wrote", _file("notes.txt", "my notes\n")),
    Case("predict-out-user-csv", f"{PREDICT} mine.csv", 2, "mine.csv: exists and is not a predictions file",
         _file("mine.csv", "id,probability\n1,high\n")),
    Case("predict-out-device", f"{PREDICT} /dev/null", 2, "/dev/null: exists and is not a regular file"),
    Case("synth-out-user-file", "data synth --rows 50 --quiet --out notes.txt", 2,
         "notes.txt: exists and is not a file mutualctr data synth wrote", _file("notes.txt", "my notes\n")),
    Case("synth-out-in-a-store", "data synth --rows 50 --quiet --out st/train.X.npy", 2,
         "st/train.X.npy: is inside the mutualctr store", lambda ctx: ctx.prepare("st")),
    Case("synth-out-is-a-synth-file", "data synth --rows 50 --quiet --out s.tsv", 0, "wrote 50 rows to s.tsv",
         lambda ctx: run_cli(["data", "synth", "--rows", "20", "--quiet", "--out", "s.tsv"], ctx.tmp)),
    Case("predict-out-own-predictions", f"{PREDICT} p.csv", 0, "wrote 300 probabilities to p.csv", _predictions,
         _check_predictions),
    Case("export-overwrite-user-additions", f"{EXPORT} e --overwrite", 2,
         "e: is a mutualctr export but also holds 'mydata/', 'notes.txt', which mutualctr did not write",
         _export_plus_user_files),
    Case("export-overwrite-forged-marker", f"{EXPORT} e --overwrite", 2,
         "e: exists and is not a mutualctr export (it holds 'README', 'src/')", _forged_export),
    Case("export-overwrite-forged-marker-alone", f"{EXPORT} e --overwrite", 2,
         "e: exists and is not a mutualctr export (its export.json lists no files written",
         lambda ctx: _forged_export(ctx, extra=False)),
    Case("export-overwrite-edited-file", f"{EXPORT} e --overwrite", 2,
         "e: is a mutualctr export but 'encoder.json' is not what mutualctr wrote there", _export_edited),
    Case("export-out-is-a-run", f"{EXPORT} r --overwrite", 2,
         "r: exists and is not a mutualctr export (it holds 'checkpoints/', 'config.yaml', 'metrics.jsonl' and 2 more)",
         _run_copy),
    Case("export-out-in-a-run", f"{EXPORT} r/e", 2, "r/e: is inside the mutualctr run", _run_copy),
    Case("export-own-no-overwrite", f"{EXPORT} e", 2, "e: holds an export already; pass --overwrite", _export),
    Case("export-overwrite-own", f"{EXPORT} e --overwrite", 0, "exported lr", _export, _check_exported_fm),
    Case("experiment-runs-user-folder", f"{EXPERIMENT} --runs mine", 2,
         "mine: exists and is not a mutualctr run cache (it holds 'notes.txt'); pass another path",
         _user_runs_folder),
    Case("experiment-runs-a-store", f"{EXPERIMENT} --runs st", 2, "st: exists and is not a mutualctr run cache",
         lambda ctx: ctx.prepare("st")),
    Case("experiment-missing-store", "experiment rq1 --data nothere --out x --models lr --quiet", 2,
         "nothere: no such store directory"),
    Case("train-resume-finished-without-last", "train --data {store} --out r --resume --quiet", 2,
         "cannot resume: its checkpoint", _run_without_last),
    Case("train-resume-damaged-last", "train --data {store} --out r --resume --quiet", 2,
         "last.pt: corrupt or truncated checkpoint", _run_damaged_last),
    Case("train-diverges-leaves-nothing", "train --data {store} --out r --quiet --model deepfm --lr 1e8 --batch-size 16 --device cpu",
         2,
         "stopped; nothing kept (r was new and is removed)"),
    # resume means the same job (issue 28 item 4): a protocol setting given again must match
    Case("train-resume-other-epochs", "train --data {store} --out r --resume --epochs 3 --quiet", 2,
         "train.epochs: the run was started with 1; --resume continues the same job (drop --epochs or choose "
         "another --out)", _run_copy),
    Case("train-resume-other-model", "train --data {store} --out r --resume --model deepfm --quiet", 2,
         "model.name: the run was started with lr; --resume continues the same job (drop --model", _run_copy),
    Case("train-resume-other-precision", "train --data {store} --out r --resume --precision bf16 --quiet", 2,
         "train.precision: the run was started with fp32; --resume continues the same job (drop --precision",
         _run_copy),
    Case("train-resume-other-config", "train --data {store} --out r --resume --config c.yaml --quiet", 2,
         "optim.lr: the run was started with 0.001; --resume continues the same job (drop --config",
         lambda ctx: (_run_copy(ctx), (ctx.tmp / "c.yaml").write_text(
             "model: {name: lr}\noptim: {lr: 0.5}\ntrain: {epochs: 1, batch_size: 64}\n"))),
    Case("train-resume-same-settings", "train --data {store} --out r --resume --model lr --epochs 1 --threads 1 "
         "--device cpu --quiet", 0, "lr: best dev AUC", _run_copy),
    Case("mutual-resume-other-alpha", "mutual --data {store} --init {run} {run} --out g --resume --alpha 10 --quiet",
         2, "mutual.alpha: the group was started with 1; --resume continues the same job (drop --alpha or choose "
         "another --out)", _group),
    Case("mutual-resume-other-lr", "mutual --data {store} --init {run} {run} --out g --resume --lr 0.01 --quiet",
         2, "mutual.lr: the group was started with 0.0001; --resume continues the same job (drop --lr", _group),
    Case("mutual-resume-other-precision", "mutual --data {store} --init {run} {run} --out g --resume --precision bf16 "
         "--quiet", 2, "train.precision: the group was started with fp32", _group),
    Case("mutual-resume-same-settings", "mutual --data {store} --init {run} {run} --out g --resume --alpha 1 "
         "--threads 1 --device cpu --quiet", 0, "group (finetune, alpha=1", _group),
    Case("distill-resume-other-beta", "distill --data {store} --teacher {run} --student lr --out g --resume "
         "--beta 10 --quiet", 2, "distill.beta: the distillation was started with 1; --resume continues the same "
         "job (drop --beta or choose another --out)", lambda ctx: _group(ctx, "distill", ("--beta", "1"))),
    # validation at the boundary (issue 28 items 6, 9): seeds, devices, empty configs, special files
    Case("train-seed-negative", "train --data {store} --out r --model lr --seed -1 --quiet", 2,
         "train.seed must be an integer in [0, 4294967295], got -1"),
    Case("train-seed-huge", "train --data {store} --out r --model lr --seed 99999999999999999999 --quiet", 2,
         "train.seed must be an integer in [0, 4294967295], got 99999999999999999999"),
    Case("yaml-seed-negative", "train --data {store} --out r --config c.yaml --quiet", 2,
         "c.yaml: train.seed must be an integer in [0, 4294967295], got -5",
         _file("c.yaml", "model: {name: lr}\ntrain: {seed: -5}\n")),
    Case("yaml-seed-huge", "train --data {store} --out r --config c.yaml --quiet", 2,
         "c.yaml: train.seed must be an integer in [0, 4294967295], got 99999999999999999999",
         _file("c.yaml", "model: {name: lr}\ntrain: {seed: 99999999999999999999}\n")),
    Case("mutual-seeds-negative", "mutual --data {store} --models lr,lr --seeds -1,-2 --out g --quiet", 2,
         "--seeds must be an integer in [0, 4294967295], got -1"),
    Case("distill-seed-negative", "distill --data {store} --teacher {run} --student lr --seed -1 --out g --quiet", 2,
         "--seed must be an integer in [0, 4294967295], got -1"),
    Case("experiment-seeds-words", "experiment rq1 --data {store} --out x --models lr --seeds a,b --quiet", 2,
         "--seeds: expected comma-separated integers, got 'a,b'"),
    Case("prepare-seed-negative", f"{PREP} st --seed -1", 2, "seed must be an integer in [0, 4294967295], got -1"),
    Case("distill-beta-negative", "distill --data {store} --teacher {run} --student lr --beta -1 --out g --quiet", 2,
         "distill.beta must be >= 0, got -1.0"),
    Case("distill-beta-word", "distill --data {store} --teacher {run} --student lr --beta often --out g --quiet", 2,
         "distill.beta: expected number | 'auto', got 'often'"),
    Case("evaluate-device-unknown", "evaluate --run {run} --data {store} --device tpu", 2,
         "device: expected one of 'auto' | 'cpu' | 'cuda', got 'tpu'"),
    Case("predict-device-unknown", "predict --run {run} --input {raw} --out p.csv --device tpu", 2,
         "device: expected one of 'auto' | 'cpu' | 'cuda', got 'tpu'"),
    Case("ensemble-device-unknown", "ensemble --runs {run} {run} --data {store} --device tpu", 2,
         "device: expected one of 'auto' | 'cpu' | 'cuda', got 'tpu'"),
    Case("train-dist-timeout-negative", "train --data {store} --out r --model lr --dist-timeout -1 --quiet", 2,
         "dist_timeout must be a positive number of seconds, got -1.0"),
    Case("train-dist-timeout-nan", "train --data {store} --out r --model lr --dist-timeout nan --quiet", 2,
         "dist_timeout must be a positive number of seconds, got nan"),
    Case("train-config-empty", "train --data {store} --out r --config c.yaml --quiet", 2,
         "c.yaml: is empty; a run config names at least its model", _file("c.yaml", "")),
    Case("train-config-dev-null", "train --data {store} --out r --config /dev/null --quiet", 2,
         "/dev/null: is a character device, not a regular file; give a file"),
    Case("prepare-input-dev-null", "prepare --dataset criteo --input /dev/null --quiet --out st", 2,
         "/dev/null: is a character device, not a regular file; give a file"),
    Case("prepare-input-fifo", "prepare --dataset criteo --input ff --quiet --out st", 2,
         "ff: is a FIFO (a named pipe), not a regular file; give a file", lambda ctx: os.mkfifo(ctx.tmp / "ff")),
    Case("predict-input-fifo", "predict --run {run} --input ff --out p.csv", 2,
         "ff: is a FIFO (a named pipe), not a regular file; give a file", lambda ctx: os.mkfifo(ctx.tmp / "ff")),
    # damaged or foreign files (issue 28 items 6, 7)
    Case("checkpoint-random-bytes", "evaluate --run r.pt --data {store}", 2,
         "r.pt: not a mutualctr checkpoint (unreadable: ", _random_bytes("r.pt"), _no_weights_only_advice),
    Case("checkpoint-random-bytes-2", "evaluate --run r.pt --data {store}", 2,
         "r.pt: not a mutualctr checkpoint (unreadable: ", _random_bytes("r.pt", seed=3), _no_weights_only_advice),
    Case("compare-binary-results", "compare x", 2, "x/results.csv: not a results.csv of mutualctr experiment",
         _experiment_files(None)),
    Case("compare-truncated-results", "compare x", 2,
         "x/results.csv:2: a row of another width than the header (a file cut short?)", _experiment_files("rq1,dee")),
    Case("compare-header-only-results", "compare x", 2, "x/results.csv: holds no rows (a file cut short?)",
         _experiment_files("")),
    Case("store-feature-map-nested", "train --data st --out r --model lr --quiet", 2,
         "st/feature_map.json: unreadable feature map: RecursionError",
         _edited_store(lambda d: json.dumps({**d, "schema": 0}).replace('"schema": 0', '"schema": ' + "[" * 100000
                                                                          + "]" * 100000))),
    Case("store-num-features-huge", "train --data st --out r --model lr --quiet", 2,
         "st/feature_map.json: malformed feature map (num_features 10000000000000.0, its fields add up to",
         _edited_store(lambda d: json.dumps({**d, "num_features": 1e13}))),
    Case("store-num-features-negative", "train --data st --out r --model lr --quiet", 2,
         "st/feature_map.json: malformed feature map (num_features -5,",
         _edited_store(lambda d: json.dumps({**d, "num_features": -5}))),
    Case("store-vocab-size-huge", "train --data st --out r --model lr --quiet", 2,
         "is not an integer in [1, 2147483647])",
         _edited_store(lambda d: json.dumps({**d, "fields": [{**d["fields"][0], "vocab_size": 10**13},
                                                               *d["fields"][1:]]}))),
    # schemas and parquet columns (issue 28 items 6, 8)
    Case("schema-separator-empty", KPREP, 2,
         "k.yaml: separator: must be one character other than a quote or a line break, got ''",
         _kinds_table(schema="separator: ''\n" + _KINDS)),
    Case("parquet-list-as-categorical", PPREP, 2,
         "p.parquet: column item: declared categorical but its parquet type is list<element: string>, which holds "
         "several values per row", _parquet(lambda pa: pa.array([["a", "b"]] * 20))),
    Case("parquet-struct-as-categorical", PPREP, 2,
         "p.parquet: column item: declared categorical but its parquet type is struct<u: int64>",
         _parquet(lambda pa: pa.array([{"u": i} for i in range(20)]))),
    Case("parquet-list-as-numeric", PPREP, 2,
         "p.parquet: column item: declared numeric but its parquet type is list<element: int64>",
         _parquet(lambda pa: pa.array([[i] for i in range(20)]), "label: y\nnumeric: [item]\n")),
    Case("parquet-invalid-utf8", PPREP, 2, "p.parquet:6: column item: \"'a\\\\xff\\\\xfe'\" is not valid UTF-8 text",
         _parquet(_bad_utf8)),
    Case("prepare-vocab-from-other-schema", f"{KPREP} --vocab-from {{store}}", 2,
         "vocab_from /", _kinds_table(), lambda ctx, r: _names_the_schemas(r)),
    Case("mutual-device-unknown", "mutual --data {store} --init {run} {run} --out g --quiet --alpha 1 --device tpu", 2,
         "train.device: expected one of"),
    # 11. the multi-valued, sequence, dense and hashed kinds (issue 25)
    Case("kinds-empty-item", KPREP, 2, "k.csv:3: column g: 'a||b' has an empty item",
         _kinds_table((1, 2, "a||b"))),
    Case("kinds-dense-not-a-number", KPREP, 2, "k.csv:4: column p: '1.5x' is not a number",
         _kinds_table((2, 3, "1.5x"))),
    Case("kinds-long-list-cut", KPREP, 0, "lists: g: 1 rows cut to max_length, 0 empty",
         _kinds_table((0, 2, "a|b|c"))),
    Case("kinds-separator-is-column-separator", KPREP, 2,
         "multi_valued.g.separator: ',' is also the column separator",
         _kinds_table(schema=_KINDS.replace("max_length: 2", "max_length: 2, separator: ','"))),
    Case("kinds-vocab-from-not-categorical", KPREP, 2,
         "sequence.s.vocab_from: 'p' is not a categorical field (it is under dense)",
         _kinds_table(schema=_KINDS + "sequence: {s: {max_length: 3, vocab_from: p}}\n")),
    Case("kinds-hashed-buckets-0", KPREP, 2, "hashed.item.buckets: must be >= 1, got 0",
         _kinds_table(schema=_KINDS.replace("categorical: [item]", "hashed: {item: {buckets: 0}}"))),
    Case("kinds-parquet-not-a-list", "prepare --dataset k.yaml --input k.parquet --quiet --out n", 2,
         "k.parquet: column g: declared multi_valued but its parquet type is int64, neither a list nor text",
         _kinds_parquet),
    # 12. the daily update (issue 27)
    Case("grow-parent-of-another-schema", f"{PREP} g --vocab-from {{store}} --grow".replace("criteo", "avazu"), 2,
         "was prepared with dataset 'criteo'"),
    Case("grow-without-vocab-from", f"{PREP} g --grow", 2, "--grow: needs --vocab-from PARENT"),
    Case("evaluate-store-not-an-ancestor", "evaluate --run {run} --data o", 2,
         "(another feature map, not grown from it)", lambda ctx: ctx.prepare("o", min_count=1)),
    Case("train-init-store-not-an-ancestor", "train --data o --init {run} --out w --quiet --threads 1", 2,
         "(another feature map, not grown from it)", lambda ctx: ctx.prepare("o", min_count=1)),
    Case("online-more-periods-than-rows", "experiment online --data {raw} --dataset criteo --periods 3 --out x", 2,
         "--periods 3: ", None),
    Case("online-more-months-than-data", "experiment online --data t.csv --dataset t.yaml --periods 3 --time-column ts "
         "--period month --out x", 2, "--periods 3: t.csv has 2 months by its column ts (2020-01 .. 2020-02); at most "
         "2 periods here", lambda ctx: _two_months(ctx.tmp)),
    Case("group-by-not-a-field", f"{PREP} n".replace("criteo", "g.yaml"), 2, "group_by: 'user' is not a field",
         lambda ctx: (ctx.tmp / "g.yaml").write_text(
             "format: tsv\nheader: false\nquoting: false\ncolumns: [label, a]\ncategorical: [a]\n"
             "group_by: user\n")),
    # 13. a model of one's own (issue 26): the import string or config named, nothing written
    Case("user-model-no-colon", f"{_TRAIN_USER} --model mypkg.MLP", 2,
         "unknown model 'mypkg.MLP' (known: lr, fm, deepfm, dcn, dcnv2, pnn, fibinet; or an installed entry point"),
    Case("user-model-module-missing", f"{_TRAIN_USER} --model nowhere_pkg.mlp:MLP", 2,
         "model nowhere_pkg.mlp:MLP: cannot import module 'nowhere_pkg.mlp': ModuleNotFoundError"),
    Case("user-model-attribute-missing", f"{_TRAIN_USER} --model {_USER}:Missing", 2,
         f"model {_USER}:Missing: module '{_USER}' has no attribute 'Missing'"),
    Case("user-model-not-a-module", f"{_TRAIN_USER} --model {_USER}:NotAModule", 2,
         f"model {_USER}:NotAModule: NotAModule is not a torch.nn.Module subclass"),
    Case("user-model-unknown-config-key", f"{_TRAIN_USER} --config u.yaml", 2,
         "u.yaml: unknown key model.dimm (allowed: dim)", _user_config(f"{{name: '{_USER}:Plain', dimm: 3}}")),
    Case("user-model-wrong-output-shape", f"{_TRAIN_USER} --config u.yaml", 2,
         f"model {_USER}:WrongShape: forward must return float logits of shape (2,) for ids of shape (2, 39), "
         "got (2, 1)", _user_config(f"{{name: '{_USER}:WrongShape'}}")),
    Case("user-model-vectorize", "mutual --data {store} --init u1 u2 --vectorize --out g --quiet --threads 1", 2,
         f"--vectorize supports the built-in models only (lr, fm, deepfm, dcn, dcnv2, pnn, fibinet), got "
         f"{_USER}:Plain; train without --vectorize", _user_runs),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    d = tmp_path_factory.mktemp("reliability")
    raw = write_tsv(d / "c.txt", criteo_rows(300))
    prepare("criteo", [raw], d / "store", progress=False)
    from mutualctr.training import jobs
    from mutualctr.training.config import run_config_from_dict

    cfg = run_config_from_dict({"model": {"name": "lr"}, "train": {"epochs": 1, "batch_size": 64, "device": "cpu",
                                                                     "prefetch": 0, "precision": "fp32"}})
    jobs.train(d / "store", d / "run", cfg, quiet=True)
    return d


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_case(case: Case, shared, tmp_path):
    if case.skip and (why := case.skip()):
        pytest.skip(why)
    raw = tmp_path / "c.txt"
    shutil.copy(shared / "c.txt", raw)
    ctx = Ctx(tmp_path, raw, shared / "store")
    try:
        if case.setup:
            case.setup(ctx)
        before = tree(tmp_path)
        words = [w.format(raw=raw, store=ctx.store, tmp=tmp_path, run=shared / "run") for w in shlex.split(case.args)]
        r = run_cli(words, tmp_path / case.cwd, wrap=case.wrap)
        shown = f"exit {r.code}\nstdout: {r.out[-2000:]}\nstderr: {r.err[-2000:]}"
        assert r.code == case.code, shown
        if case.code:
            assert case.message in r.err, shown
            assert r.err.strip().count("\n") == 0, shown  # one line
            assert "Traceback" not in r.err
            assert tree(tmp_path) == before, "the failing command wrote something"
        else:
            assert case.message in r.out, shown
        if case.check:
            case.check(ctx, r)
    finally:
        for p in ctx.children:
            p.kill()
            p.join()
        for ro in (tmp_path / "ro", tmp_path / "r"):
            if ro.exists():
                for d, _, _ in os.walk(ro):
                    os.chmod(d, 0o755)


# -- the library side -----------------------------------------------------------------------------
def test_config_error_is_a_mutualctr_error_and_a_value_error():
    from mutualctr import config

    assert config.ConfigError is ConfigError
    assert issubclass(ConfigError, MutualCTRError) and issubclass(ConfigError, ValueError)


def test_flag_and_yaml_give_the_same_message(tmp_path):
    from dataclasses import replace

    from mutualctr.training.config import MutualConfig, load_run_config, run_config_from_dict, with_overrides

    cfg = run_config_from_dict({"model": {"name": "lr"}})
    for key, value, section in [("epochs", 0, "train"), ("lr", float("nan"), "optim"),
                                ("batch_size", -3, "train")]:
        with pytest.raises(ConfigError) as flag:
            with_overrides(cfg, **{key: value})
        f = tmp_path / "c.yaml"
        f.write_text(f"model: {{name: lr}}\n{section}: {{{key}: {'.nan' if value != value else value}}}\n")
        with pytest.raises(ConfigError) as yaml_:
            load_run_config(f)
        assert str(yaml_.value) == f"{f}: {flag.value}"
        assert str(flag.value).startswith(f"{section}.{key} must be")
    with pytest.raises(ConfigError, match=r"^mutual\.alpha must be a finite number, got inf$"):
        MutualConfig(alpha=float("inf"))
    with pytest.raises(ConfigError, match=r"^train\.evals_per_epoch: expected an integer, got 1\.5$"):
        replace(cfg.train, evals_per_epoch=1.5)
    with pytest.raises(ConfigError, match=r"^optim\.embedding_optimizer: expected one of"):
        replace(cfg.optim, embedding_optimizer="adagrad")


def test_yaml_duplicates_in_flow_mappings_and_merges(tmp_path):
    from mutualctr.config import load_yaml

    f = tmp_path / "a.yaml"
    f.write_text("optim: {lr: 1, lr: 2}\n")
    with pytest.raises(ConfigError, match=r"a\.yaml:1:16: invalid YAML: duplicate key 'lr' \(first on li"):
        load_yaml(f)
    f.write_text("base: &b {lr: 1, eps: 2}\noptim:\n  <<: *b\n  lr: 3\n")  # a merge may override
    assert load_yaml(f)["optim"] == {"lr": 3, "eps": 2}
    f.write_text("a: 1\nb: 2\n")
    assert load_yaml(f) == {"a": 1, "b": 2}


def test_ownership_rules(tmp_path):
    run = tmp_path / "run"
    assert outdir.check_replaceable(run, "run") == "absent"
    run.mkdir()
    (run / f".x.{atomic.owner_tag()}.abc.tmp").write_text("")
    assert outdir.check_replaceable(run, "run") == "empty"  # only our temporaries
    (run / "config.yaml").write_text("")
    with pytest.raises(OutputError, match="not a mutualctr run"):
        outdir.check_replaceable(run, "run")
    outdir.write_marker(run, "run")
    assert outdir.is_ours(run, "run") and not outdir.is_ours(run, "group")
    (run / "checkpoints").mkdir()
    assert outdir.check_replaceable(run, "run") == "ours"
    (run / "notes.md").write_text("mine")
    with pytest.raises(OutputError, match=r"also holds 'notes\.md'"):
        outdir.remove(run, "run")
    assert (run / "notes.md").read_text() == "mine"
    (run / "notes.md").unlink()
    assert outdir.remove(run, "run") and not run.exists()
    assert temporaries(tmp_path) == []
    legacy = tmp_path / "legacy"  # a run written before markers existed
    legacy.mkdir()
    (legacy / "config.yaml").write_text("")
    (legacy / "store.json").write_text("{}")
    assert outdir.is_ours(legacy, "run")


def test_lock_is_exclusive_reentrant_and_leaves_nothing(tmp_path):
    out = tmp_path / "st"
    with outdir.locked(out):
        assert (tmp_path / ".st.lock").read_text().split()[0] == str(os.getpid())
        with outdir.locked(out):  # the same process again (e.g. api.train inside a command)
            pass
        assert (tmp_path / ".st.lock").exists()
        code = ("import sys; from mutualctr import outdir\n"
                "try:\n    outdir.locked(sys.argv[1]).__enter__()\n"
                "except Exception as e:\n    print(e)")
        p = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
        assert f"another mutualctr process (pid {os.getpid()}) is writing it" in p.stdout, p
    assert temporaries(tmp_path) == []
    with outdir.locked(out):  # free again
        pass


def test_stale_temporaries_only(tmp_path):
    out = tmp_path / "st"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = atomic.host_id()
    names = {
        f".st.{host}-{dead.pid}-1.abcd1234.tmp": False,  # dead owner: removed
        f".st.{host}-{os.getpid()}-1.abcd1234.tmp": False,  # our pid, another start: pid reused
        f".st.{atomic.owner_tag()}.abcd1234.tmp": True,  # alive (this process)
        f".st.00000000-{dead.pid}-1.abcd1234.tmp": True,  # another host: cannot tell, kept
        f".other.{host}-{dead.pid}-1.abcd1234.tmp": True,  # another output's
        ".st.legacy99.tmp": True,  # no owner recorded: kept
    }
    for n in names:
        (tmp_path / n).mkdir()
        (tmp_path / n / "x").write_text("")
    removed = outdir.clean_stale(out)
    assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, keep in names.items() if keep)
    inside = outdir.clean_stale_in(tmp_path)
    assert [p.name for p in inside] == [f".other.{host}-{dead.pid}-1.abcd1234.tmp"]


def test_prepare_summary_reports_one_class_splits(tmp_path):
    rows = criteo_rows(40)
    for i, r in enumerate(rows):
        r[0] = "1" if i % 10 == 0 else "0"  # positives only where the split may put them
    raw = write_tsv(tmp_path / "c.txt", rows)
    res = prepare("criteo", [raw], tmp_path / "st", progress=False)
    st = res.store
    want = [st.split_problem(s) for s in st.splits if st.split_problem(s)]
    assert res.summary.warnings == want
    for s in st.splits:
        _, y = st.split(s)
        single = len(set(y.tolist())) < 2
        assert (st.split_problem(s) is not None) == single
    again = prepare("criteo", [raw], tmp_path / "st", progress=False)
    assert again.reused and again.summary.warnings == want


def test_output_file_paths(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match=r"d: is a directory; pass a file name"):
        outdir.resolve_file(tmp_path / "d")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match=r"dangling: is a symbolic link to .*nowhere, which does not exist"):
        outdir.resolve_file(tmp_path / "dangling")
    (tmp_path / "f.txt").write_text("")
    with pytest.raises(OutputError, match=r"f\.txt is a file, not a directory"):
        outdir.resolve_file(tmp_path / "f.txt" / "p.csv")
    (tmp_path / "link.csv").symlink_to(tmp_path / "f.txt")
    assert outdir.resolve_file(tmp_path / "link.csv") == (tmp_path / "f.txt").resolve()
    assert outdir.resolve_file(tmp_path / "new.csv") == (tmp_path / "new.csv").resolve()


# -- issue 28: the one rule for output paths, at the library level -----------------------------
def test_export_marker_is_a_manifest_of_the_files(tmp_path):
    e = tmp_path / "e"
    e.mkdir()
    (e / "model.pt").write_bytes(b"weights")
    (e / "encoder.json").write_text("{}")
    marker = {"format": "mutualctr-export", "files": outdir.manifest_files(e, ["model.pt", "encoder.json"])}
    (e / "export.json").write_text(json.dumps(marker))
    assert outdir.check_replaceable(e, "export") == "ours"
    (e / "model.pt").write_bytes(b"weightz")  # same size, other bytes
    with pytest.raises(OutputError, match=r"'model\.pt' is not what mutualctr wrote"):
        outdir.check_replaceable(e, "export")
    (e / "model.pt").write_bytes(b"weights")
    (e / "model.onnx").write_bytes(b"")  # an entry an export may hold, but not listed: not ours
    with pytest.raises(OutputError, match=r"also holds 'model\.onnx'"):
        outdir.check_replaceable(e, "export")
    (e / "model.onnx").unlink()
    (e / "encoder.json").unlink()
    with pytest.raises(OutputError, match=r"'encoder\.json' is not what mutualctr wrote"):
        outdir.remove(e, "export")
    assert sorted(os.listdir(e)) == ["export.json", "model.pt"]


def test_run_cache_rule(tmp_path):
    runs = tmp_path / "runs"
    assert outdir.claim_cache(runs, "runs") == runs.resolve() and not runs.exists()
    outdir.mark_cache(runs, "runs")
    assert outdir.check_replaceable(runs, "runs") == "ours"
    legacy = tmp_path / "old"  # written before the cache had a marker: job directories only
    (legacy / "train-0123").mkdir(parents=True)
    outdir.write_marker(legacy / "train-0123", "run")
    assert outdir.is_ours(legacy, "runs")
    (legacy / "a").mkdir()  # a run of the user's, not a job of a cache
    outdir.write_marker(legacy / "a", "run")
    assert not outdir.is_ours(legacy, "runs")


def test_claim_file(tmp_path):
    (tmp_path / "in.txt").write_text("1\t2\n")
    with pytest.raises(OutputError, match=r"is the input"):
        outdir.claim_file(tmp_path / "in.txt", inputs=[tmp_path / "in.txt"])
    (tmp_path / "link.csv").symlink_to("in.txt")  # the input through a link
    with pytest.raises(OutputError, match=r"link\.csv: is the input"):
        outdir.claim_file(tmp_path / "link.csv", inputs=[tmp_path / "in.txt"])
    (tmp_path / "empty.csv").write_text("")
    assert outdir.claim_file(tmp_path / "empty.csv") == (tmp_path / "empty.csv").resolve()
    p = tmp_path / "p.csv"
    p.write_text('id,"a,b",probability\n1,"x,y",0.123456\n2,z,1.000000\n')
    assert outdir.claim_file(p) == p.resolve()
    p.write_text("id,probability\n1,0.5\n")  # not 6 decimals: not ours
    with pytest.raises(OutputError, match=r"not a predictions file"):
        outdir.claim_file(p)
    run = tmp_path / "run"
    run.mkdir()
    outdir.write_marker(run, "run")
    with pytest.raises(OutputError, match=r"is inside the mutualctr run"):
        outdir.claim_file(run / "sub" / "p.csv")


def _cli_paused_at(target: str, argv: list[str], cwd: Path, ready: Path) -> subprocess.Popen:
    """``mutualctr ARGV`` as a real process whose ``target`` (module:Class.method or
    module:function) waits, once it has run, until a signal arrives; ``ready`` appears then."""
    module, name = target.split(":")
    code = f"""
import sys, time, importlib, signal
# the signal state a shell gives a command, whatever this test process inherited or set
signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT, signal.SIGTERM}})
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
m = importlib.import_module({module!r})
owner, _, attr = {name!r}.rpartition(".")
holder = getattr(m, owner) if owner else m
real = getattr(holder, attr)
def paused(*a, **k):
    r = real(*a, **k)
    open({str(ready)!r}, "w").close()
    time.sleep(600)
    return r
setattr(holder, attr, paused)
sys.argv = ["mutualctr", *{argv!r}]
from mutualctr.cli import main
main()
"""
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _interrupt(p: subprocess.Popen, ready: Path, sig) -> Result:
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the command never reached the pause"
        time.sleep(0.05)
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"no exit 120 s after {sig!r}; stdout {out[-2000:]!r} stderr {err[-2000:]!r}") from None
    return Result(p.returncode, out, err)


def test_sigterm_during_prepare_leaves_nothing(shared, tmp_path):
    import signal

    shutil.copy(shared / "c.txt", tmp_path / "c.txt")
    before = tree(tmp_path)
    p = _cli_paused_at("mutualctr.data.fields:write_vocab",
                       ["prepare", "--dataset", "criteo", "--input", "c.txt", "--out", "st", "--quiet"],
                       tmp_path, tmp_path.parent / f"{tmp_path.name}.ready")
    r = _interrupt(p, tmp_path.parent / f"{tmp_path.name}.ready", signal.SIGTERM)
    assert r.code == 143, r
    assert r.err.strip() == ("error: interrupted by SIGTERM: nothing was written to st, no temporary left; "
                             "run the command again"), r.err
    assert tree(tmp_path) == before  # no store, no .st.*.tmp, no .st.lock


def test_sigint_during_train_keeps_the_checkpoint_and_resumes(shared, tmp_path):
    import signal

    ready = tmp_path.parent / f"{tmp_path.name}.ready"
    args = ["train", "--data", str(shared / "store"), "--out", "r", "--quiet", "--model", "lr", "--epochs", "2",
            "--batch-size", "64", "--device", "cpu", "--threads", "1"]
    p = _cli_paused_at("mutualctr.training.rundir:Checkpointer.save", args, tmp_path, ready)
    r = _interrupt(p, ready, signal.SIGINT)
    assert r.code == 130, r
    assert r.err.strip() == ("error: interrupted by SIGINT: r keeps its last checkpoint; continue with the "
                             "same command and --resume"), r.err
    left = [str(Path(d, n).relative_to(tmp_path)) for d, _, files in os.walk(tmp_path) for n in files
            if n.endswith((".tmp", ".lock", ".old", ".del"))]
    assert left == [] and temporaries(tmp_path) == []
    assert (tmp_path / "r" / "checkpoints" / "last.pt").is_file()
    again = run_cli([*args, "--resume"], tmp_path)
    assert again.code == 0, again
    assert (tmp_path / "r" / "summary.json").is_file()


# -- issue 28 item 9: the Python API checks its arguments at entry ------------------------------
API_CASES = [  # (id, call(mc, shared, tmp), message fragment)
    ("mutual-init-a-string", lambda mc, s, t: mc.mutual(s / "store", t / "g", init=str(s / "run")),
     "init: expected a list of paths, got"),
    ("ensemble-runs-a-string", lambda mc, s, t: mc.ensemble(str(s / "run"), s / "store"),
     "runs: expected a list of paths, got"),
    ("predict-keep-a-string", lambda mc, s, t: mc.predict(s / "run", s / "c.txt", t / "p.csv", keep="label"),
     "keep: expected a list of strings, got 'label' (write keep=['label'])"),
    ("train-lr-text", lambda mc, s, t: mc.train(s / "store", t / "r", model="lr", lr="0.01"),
     "lr: expected a number, got '0.01'"),
    ("train-epochs-text", lambda mc, s, t: mc.train(s / "store", t / "r", model="lr", epochs="2"),
     "epochs: expected an integer, got '2'"),
    ("train-data-none", lambda mc, s, t: mc.train(None, t / "r", model="lr"), "data: expected a path, got None"),
    ("train-model-not-a-string", lambda mc, s, t: mc.train(s / "store", t / "r", model=3),
     "model: expected a model name, import string or class, got 3"),
    ("train-seed-negative", lambda mc, s, t: mc.train(s / "store", t / "r", model="lr", seed=-1),
     "train.seed must be an integer in [0, 4294967295], got -1"),
    ("evaluate-split-none", lambda mc, s, t: mc.evaluate(s / "run", s / "store", split=None),
     "split: expected a string, got None"),
    ("evaluate-device-unknown", lambda mc, s, t: mc.evaluate(s / "run", s / "store", device="tpu"),
     "device: expected one of 'auto' | 'cpu' | 'cuda', got 'tpu'"),
    ("mutual-init-holds-none", lambda mc, s, t: mc.mutual(s / "store", t / "g", init=[s / "run", None]),
     "init[1]: expected a path, got None"),
    ("mutual-seeds-negative", lambda mc, s, t: mc.mutual(s / "store", t / "g", models=["lr", "lr"], seeds=[-1, 2]),
     "--seeds must be an integer in [0, 4294967295], got -1"),
    ("distill-beta-negative", lambda mc, s, t: mc.distill(s / "store", t / "g", teacher=s / "run", student="lr",
                                                          beta=-1), "distill.beta must be >= 0"),
    ("prepare-inputs-none", lambda mc, s, t: mc.prepare("criteo", None, t / "st"),
     "inputs: expected a list of paths, got None"),
    ("prepare-seed-negative", lambda mc, s, t: mc.prepare("criteo", s / "c.txt", t / "st", seed=-1),
     "seed must be an integer in [0, 4294967295], got -1"),
    ("experiment-seeds-a-string", lambda mc, s, t: mc.experiment("rq1", s / "store", t / "x", seeds="1,2"),
     "seeds: expected a list of integers, got '1,2'"),
    ("synth-rows-none", lambda mc, s, t: mc.synth(None, t / "s.tsv"), "rows: expected an integer, got None"),
    ("train-threads-text", lambda mc, s, t: mc.train(s / "store", t / "r", model="lr", threads="2"),
     "threads must be an integer >= 0"),
]


@pytest.mark.parametrize("call,message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_argument_case(call, message, shared, tmp_path):
    """A bad argument raises a ConfigError (a MutualCTRError) naming it, never a bare TypeError or
    ValueError from inside, and nothing is written."""
    import mutualctr as mc

    before, shared_before = tree(tmp_path), tree(shared)
    with pytest.raises(MutualCTRError) as e:
        call(mc, shared, tmp_path)
    assert isinstance(e.value, ConfigError) and message in str(e.value), str(e.value)
    assert tree(tmp_path) == before and tree(shared) == shared_before
