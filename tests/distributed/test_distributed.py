"""torchrun modes on CPU with gloo and 2 processes on localhost.

Workers are started the way torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in
the environment, one thread each); one test goes through the real `--nproc` / torchrun path.
Every equality check compares against the single-process trainer run in this process with
the same seeds, config and global batch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mutualctr.data.loader import BatchLoader
from mutualctr.data.store import Store
from mutualctr.distributed import shard_bounds, strip_option
from mutualctr.distributed.shard import ShardedBatches
from mutualctr.training import jobs as api
from mutualctr.training.rundir import GroupCheckpoint, ModelCheckpoint, load
from mutualctr.training.config import run_config_from_dict, run_config_to_dict
from tests.conftest import interrupted_at_step, tiny_config

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5


def _cfg(model="deepfm", *, seed=1, epochs=2, evals_per_epoch=2, embedding_optimizer="rowwise", batch_size=255,
         lr=3e-3):
    """Tiny config with both L2 terms on, one thread, and a batch that splits unevenly in two."""
    d = run_config_to_dict(tiny_config(model, seed=seed, epochs=epochs, evals_per_epoch=evals_per_epoch,
                                       embedding_optimizer=embedding_optimizer, lr=lr))
    d["model"].update(embedding_l2=1e-3, net_l2=1e-4)
    d["train"].update(threads=1, batch_size=batch_size)
    return d


def _config_dir(root: Path, **kw) -> Path:
    d = root / "cfgs"
    d.mkdir(exist_ok=True)
    for m in ("deepfm", "dcn"):
        (d / f"{m}.yaml").write_text(yaml.safe_dump(_cfg(m, **kw)))
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(spec: dict, tmp: Path, world: int = 2, paths: tuple[Path, ...] = ()) -> list[subprocess.Popen]:
    """``world`` worker processes of tests/distributed/_worker.py, as torchrun would start them
    (this tree's src/ first on their path, then ``paths``, e.g. a user model's package)."""
    path = tmp / f"spec{_free_port()}.json"
    path.write_text(json.dumps(spec))
    port = str(_free_port())
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(map(str, [ROOT / "src", ROOT, *paths])),
                   PYTHONFAULTHANDLER="1")  # a crash prints every thread's Python stack
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.distributed._worker", str(path)], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait(procs, timeout=240) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err))
    return out


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def two_workers(tiny_store, tmp_path_factory):
    """One 2-process launch running every job of the equality checks."""
    tmp = tmp_path_factory.mktemp("dist")
    cdir = _config_dir(tmp)
    _interrupted_single_process_run(tiny_store, tmp / "dp_resume")
    threads = torch.get_num_threads()
    pre = [tmp / "pre0", tmp / "pre1"]
    for i, (run, model) in enumerate(zip(pre, ["deepfm", "dcn"])):
        api.train(tiny_store, run, run_config_from_dict(_cfg(model, seed=5 + i, epochs=1, evals_per_epoch=1)),
                  quiet=True)
    torch.set_num_threads(threads)
    jobs = [
        {"op": "mutual", "name": "finetune", "store": str(tiny_store), "out": str(tmp / "finetune"),
         "kwargs": {"init": [str(p) for p in pre], "evals_per_epoch": 2, "alpha": 1.0}},
        {"op": "train", "name": "dp_resume", "store": str(tiny_store), "out": str(tmp / "dp_resume"),
         "config": _cfg(epochs=3), "resume": True},
        {"op": "train", "name": "dp_rowwise", "store": str(tiny_store), "out": str(tmp / "dp_rowwise"),
         "config": _cfg()},
        {"op": "train", "name": "dp_empty_shard", "store": str(tiny_store), "out": str(tmp / "dp_empty_shard"),
         "config": _cfg(batch_size=4799, epochs=3, evals_per_epoch=1, lr=3e-2)},
        {"op": "train", "name": "dp_dense", "store": str(tiny_store), "out": str(tmp / "dp_dense"),
         "config": _cfg("dcn", embedding_optimizer="dense")},
        {"op": "mutual", "name": "mutual", "store": str(tiny_store), "out": str(tmp / "mutual"),
         "kwargs": {"models": ["deepfm", "dcn"], "seeds": [1, 2], "epochs": 2, "evals_per_epoch": 2,
                    "config_dir": str(cdir), "alpha": 1.0}},
        {"op": "mutual", "name": "two_per_worker", "store": str(tiny_store), "out": str(tmp / "two_per_worker"),
         "kwargs": {"models": ["deepfm", "dcn", "dcn", "deepfm"], "seeds": [1, 2, 3, 4], "epochs": 1,
                    "evals_per_epoch": 1, "config_dir": str(cdir), "alpha": 0.5}},
    ]
    t0 = time.perf_counter()
    res = _wait(_spawn({"jobs": jobs, "result": str(tmp / "result")}, tmp))
    for rc, err in res:
        assert rc == 0, err[-3000:]
    results = [json.loads((tmp / f"result.{r}").read_text()) for r in range(2)]
    return {"tmp": tmp, "cdir": cdir, "results": results, "pre": pre, "seconds": time.perf_counter() - t0}


def _interrupted_single_process_run(store: Path, out: Path) -> None:
    """A one-process run of _cfg(epochs=3) stopped mid-epoch 2, after a checkpoint."""
    threads = torch.get_num_threads()
    with interrupted_at_step(25):
        api.train(store, out, run_config_from_dict(_cfg(epochs=3)), quiet=True)
    torch.set_num_threads(threads)
    assert GroupCheckpoint.load(out / "checkpoints" / "last.pt").loop.step == 19


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_runs_match(single: Path, multi: Path, s: dict, m: dict, weights_atol: float):
    for k in ("dev_auc", "dev_logloss", "test_auc", "test_logloss"):
        assert abs(s[k] - m[k]) < TOL, (k, s[k], m[k])
    assert s["best_step"] == m["best_step"] and s["steps"] == m["steps"]
    hs, hm = _history(single), _history(multi)
    assert [h["step"] for h in hs] == [h["step"] for h in hm]
    for a, b in zip(hs, hm):  # the mean training loss over each evaluation window (none at the start), dev AUC
        assert (a["train_loss"] is None) == (b["train_loss"] is None) and abs(a["dev_auc"] - b["dev_auc"]) < TOL
        assert a["train_loss"] is None or abs(a["train_loss"] - b["train_loss"]) < TOL
    ws = ModelCheckpoint.load(single / "checkpoints" / "best.pt").state_dict
    wm = ModelCheckpoint.load(multi / "checkpoints" / "best.pt").state_dict
    for k in ws:
        torch.testing.assert_close(ws[k], wm[k], rtol=0, atol=weights_atol, msg=k)


# ---- pieces ---------------------------------------------------------------------------------

def test_shards_of_each_global_batch_are_the_single_process_batch(tiny_store):
    X, y = Store.open(tiny_store).split("train")
    loader = BatchLoader(X, y, batch_size=255, shuffle=True, seed=3)
    parts = [ShardedBatches(loader, d, 3) for d in range(3)]
    single = list(loader.epoch(1, start_batch=2))
    sharded = list(zip(*(p.epoch(1, start_batch=2) for p in parts)))
    assert len(single) == len(sharded) == len(loader) - 2
    for (ids, labels), shards in zip(single, sharded):
        assert torch.equal(torch.cat([s[0] for s in shards]), ids)
        assert torch.equal(torch.cat([s[1] for s in shards]), labels)
        assert all(s[2] == len(labels) for s in shards)
    assert [shard_bounds(10, d, 3) for d in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert strip_option(["train", "--nproc", "2", "--nproc=3", "--out", "x"], "--nproc") == ["train", "--out", "x"]


# ---- equality with one process ----------------------------------------------------------------

def test_data_parallel_sparse_rows_equals_single_process(two_workers, tiny_store, tmp_path, one_thread):
    single = api.train(tiny_store, tmp_path / "s", run_config_from_dict(_cfg()), quiet=True).to_dict()
    r0, r1 = (r["dp_rowwise"] for r in two_workers["results"])
    timing = ("train_time_s", "samples_per_s")
    assert {k: v for k, v in r0.items() if k not in timing} == {k: v for k, v in r1.items() if k not in timing}
    _assert_runs_match(tmp_path / "s", two_workers["tmp"] / "dp_rowwise", single, r0, weights_atol=1e-4)


def test_a_one_row_last_batch_leaves_a_worker_an_empty_shard(two_workers, tiny_store, tmp_path, one_thread):
    """4,800 train rows in batches of 4,799: the last global batch has 1 row, one worker none."""
    single = api.train(tiny_store, tmp_path / "s", run_config_from_dict(_cfg(batch_size=4799, epochs=3, evals_per_epoch=1, lr=3e-2)),
                       quiet=True).to_dict()
    multi = two_workers["results"][0]["dp_empty_shard"]
    _assert_runs_match(tmp_path / "s", two_workers["tmp"] / "dp_empty_shard", single, multi, weights_atol=1e-4)


def test_one_process_run_resumes_data_parallel(two_workers, tiny_store, tmp_path, one_thread):
    """A checkpoint of one process resumes on 2 workers and ends like the uninterrupted run."""
    single = api.train(tiny_store, tmp_path / "s", run_config_from_dict(_cfg(epochs=3)), quiet=True).to_dict()
    resumed = two_workers["results"][0]["dp_resume"]
    _assert_runs_match(tmp_path / "s", two_workers["tmp"] / "dp_resume", single, resumed, weights_atol=1e-4)


def test_data_parallel_dense_embedding_equals_single_process(two_workers, tiny_store, tmp_path, one_thread):
    single = api.train(tiny_store, tmp_path / "s", run_config_from_dict(_cfg("dcn", embedding_optimizer="dense")),
                       quiet=True).to_dict()
    r0 = two_workers["results"][0]["dp_dense"]
    _assert_runs_match(tmp_path / "s", two_workers["tmp"] / "dp_dense", single, r0, weights_atol=1e-4)


def test_mutual_one_member_per_worker_equals_single_process_group(two_workers, tiny_store, tmp_path, one_thread):
    single = api.mutual_from_flags(tiny_store, tmp_path / "g", models=["deepfm", "dcn"], seeds=[1, 2], epochs=2,
                        evals_per_epoch=2, config_dir=two_workers["cdir"], alpha=1.0, quiet=True).to_dict()
    g0, g1 = (r["mutual"] for r in two_workers["results"])
    assert [m["model"] for m in g0["members"]] == ["deepfm", "dcn"]
    assert [m["test_auc"] for m in g0["members"]] == [m["test_auc"] for m in g1["members"]]
    multi = two_workers["tmp"] / "mutual"
    assert json.loads((multi / "group.json").read_text())["settings"]["workers"] == 2
    for i, (s, m) in enumerate(zip(single["members"], g0["members"])):
        name = f"m{i}-{s['model']}"
        _assert_runs_match(tmp_path / "g" / name, multi / name, s, m, weights_atol=1e-5)
    # a mutual run really exchanged predictions: alpha changes the result
    alone = api.train(tiny_store, tmp_path / "alone", run_config_from_dict(_cfg("deepfm", seed=1)), quiet=True).to_dict()
    assert abs(alone["test_logloss"] - g0["members"][0]["test_logloss"]) > 1e-6


def test_mutual_finetuning_on_two_workers_equals_one_process(two_workers, tiny_store, tmp_path, one_thread):
    single = api.mutual_from_flags(tiny_store, tmp_path / "g", init=two_workers["pre"], evals_per_epoch=2, alpha=1.0,
                                   quiet=True).to_dict()
    multi = two_workers["results"][1]["finetune"]
    assert [m["start"] for m in single["members"]] == [m["start"] for m in multi["members"]]
    for i, (s, m) in enumerate(zip(single["members"], multi["members"])):
        name = f"m{i}-{s['model']}"
        _assert_runs_match(tmp_path / "g" / name, two_workers["tmp"] / "finetune" / name, s, m, weights_atol=1e-5)
        assert abs(s["relaimp_test"] - m["relaimp_test"]) < 1e-3
    assert json.loads((two_workers["tmp"] / "finetune" / "start.json").read_text()) == [m["start"] for m in multi["members"]]


def test_several_members_per_worker_equal_single_process_group(two_workers, tiny_store, tmp_path, one_thread):
    single = api.mutual_from_flags(tiny_store, tmp_path / "g", models=["deepfm", "dcn", "dcn", "deepfm"], seeds=[1, 2, 3, 4],
                        epochs=1, evals_per_epoch=1, config_dir=two_workers["cdir"], alpha=0.5, quiet=True).to_dict()
    multi = two_workers["results"][0]["two_per_worker"]
    for s, m in zip(single["members"], multi["members"]):
        for k in ("dev_auc", "test_auc", "test_logloss"):
            assert abs(s[k] - m[k]) < TOL, k


@pytest.mark.skipif(os.environ.get("MUTUALCTR_TEST_4PROC") != "1",
                    reason="4 processes on a 2-core machine take ~30 s; set MUTUALCTR_TEST_4PROC=1")
def test_combined_grid_two_members_each_data_parallel_over_two_workers(tiny_store, tmp_path, one_thread):
    cdir = _config_dir(tmp_path)
    kw = {"models": ["deepfm", "dcn"], "seeds": [1, 2], "epochs": 1, "evals_per_epoch": 2, "config_dir": str(cdir),
          "alpha": 1.0}
    job = {"op": "mutual", "name": "g", "store": str(tiny_store), "out": str(tmp_path / "g"), "kwargs": kw}
    for code, err in _wait(_spawn({"jobs": [job], "result": str(tmp_path / "r")}, tmp_path, world=4)):
        assert code == 0, err[-3000:]
    results = [json.loads((tmp_path / f"r.{r}").read_text()) for r in range(4)]
    # the session released the (data) subgroups it created; only the default group is left
    assert [r["_groups_left"] for r in results] in ([1] * 4, [None] * 4)
    multi = results[0]["g"]
    single = api.mutual_from_flags(tiny_store, tmp_path / "s", quiet=True, **{**kw, "config_dir": cdir}).to_dict()
    for i, (s, m) in enumerate(zip(single["members"], multi["members"])):
        name = f"m{i}-{s['model']}"
        _assert_runs_match(tmp_path / "s" / name, tmp_path / "g" / name, s, m, weights_atol=1e-4)


def test_nproc_flag_runs_torchrun_and_matches_one_process(two_workers, tiny_store, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_cfg()))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, "-m", "mutualctr", "train", "--data", str(tiny_store), "--config", str(cfg),
                        "--out", str(tmp_path / "run"), "--nproc", "2", "--quiet", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints
    got = json.loads(lines[0])
    want = two_workers["results"][0]["dp_rowwise"]
    for k in ("dev_auc", "test_auc", "test_logloss", "best_step"):
        assert got[k] == pytest.approx(want[k], abs=TOL), k


# ---- failure and resume -------------------------------------------------------------------------

def test_dead_worker_stops_the_other_and_the_group_resumes_at_one_step(tiny_store, tmp_path, one_thread):
    cdir = _config_dir(tmp_path, epochs=4, evals_per_epoch=2)
    out = tmp_path / "g"
    job = {"op": "mutual", "name": "g", "store": str(tiny_store), "out": str(out),
           "kwargs": {"models": ["deepfm", "dcn"], "seeds": [1, 2], "epochs": 4, "evals_per_epoch": 2,
                      "config_dir": str(cdir), "alpha": 1.0}}
    procs = _spawn({"jobs": [job], "result": str(tmp_path / "r"), "timeout": 60}, tmp_path)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.02)
    assert last.exists() and procs[1].poll() is None, "the group ended before it could be killed; enlarge it"
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.time()
    rc, err = _wait(procs[:1], timeout=60)[0]
    took = time.time() - t_kill
    procs[1].wait()
    assert rc != 0 and took < 60, (rc, took)
    assert "lost contact with the other workers" in err and "--resume" in err, err[-2000:]
    # the group checkpoint names one file per member, all at its step
    ck = GroupCheckpoint.load(last)
    files = [load(last.parent / f, "member") for f in ck.member_files]
    assert [f["index"] for f in files] == [0, 1] and {f["step"] for f in files} == {ck.loop.step}
    assert 0 < ck.loop.step < 4 * 19
    # resume with two workers: both members restart at that step and finish like one process
    job["kwargs"]["resume"] = True
    res = _wait(_spawn({"jobs": [job], "result": str(tmp_path / "r"), "timeout": 60}, tmp_path))
    for code, e in res:
        assert code == 0, e[-3000:]
    resumed = json.loads((tmp_path / "r.0").read_text())["g"]
    single = api.mutual_from_flags(tiny_store, tmp_path / "s", models=["deepfm", "dcn"], seeds=[1, 2], epochs=4,
                        evals_per_epoch=2, config_dir=cdir, alpha=1.0, quiet=True).to_dict()
    for i, (s, m) in enumerate(zip(single["members"], resumed["members"])):
        name = f"m{i}-{s['model']}"
        assert [h["step"] for h in _history(out / name)] == [h["step"] for h in _history(tmp_path / "s" / name)]
        for k in ("dev_auc", "test_auc", "test_logloss"):
            assert abs(s[k] - m[k]) < TOL, (name, k)


def test_hung_worker_times_out_with_a_clear_error(tiny_store, tmp_path):
    cdir = _config_dir(tmp_path, epochs=6)
    job = {"op": "mutual", "name": "g", "store": str(tiny_store), "out": str(tmp_path / "g"),
           "kwargs": {"models": ["deepfm", "dcn"], "seeds": [1, 2], "epochs": 6, "config_dir": str(cdir),
                      "dist_timeout": 5, "alpha": 1.0}}
    procs = _spawn({"jobs": [job], "result": str(tmp_path / "r"), "timeout": 5}, tmp_path)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "g" / "m0-deepfm" / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        procs[1].send_signal(signal.SIGSTOP)  # alive but silent: only the timeout can tell
        t = time.time()
        rc, err = _wait(procs[:1], timeout=60)[0]
        assert rc != 0 and time.time() - t < 60
        assert "did not answer within 5 s" in err and "Timed out" in err, err[-2000:]
    finally:
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()


# ---- stores with list and dense fields (issue 25) -------------------------------------------------

def _kinds_store(tmp: Path) -> Path:
    from mutualctr.data.prepare import prepare
    from tests.data import kinds_cases as kc

    schema, raw = kc.write(tmp, kc.rows(600, seed=6))
    return prepare(schema, [raw], tmp / "kst", split="sequential", progress=False).store.path


def test_shards_of_a_list_and_dense_store_are_the_single_process_batch(tmp_path):
    X, y = Store.open(_kinds_store(tmp_path)).split("train")
    loader = BatchLoader(X, y, batch_size=101, shuffle=True, seed=3)
    parts = [ShardedBatches(loader, d, 2) for d in range(2)]
    for whole, (a, b) in zip(loader.epoch(1), zip(*(p.epoch(1) for p in parts))):
        assert a[2] == b[2] == len(whole)
        assert torch.equal(torch.cat([a[0].ids, b[0].ids]), whole.ids)
        assert torch.equal(torch.cat([a[0].bags["hist"], b[0].bags["hist"]]), whole.bags["hist"])
        assert torch.equal(torch.cat([a[0].missing, b[0].missing]), whole.missing)
        assert torch.equal(torch.cat([a[1], b[1]]), whole.labels)


def test_nproc_data_parallel_on_a_list_and_dense_store_matches_one_process(tmp_path, one_thread):
    store = _kinds_store(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(batch_size=101)))
    single = api.train(store, tmp_path / "s", run_config_from_dict(_cfg(batch_size=101)), quiet=True).to_dict()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, "-m", "mutualctr", "train", "--data", str(store), "--config", str(cfg),
                        "--out", str(tmp_path / "run"), "--nproc", "2", "--quiet", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][0])
    for k in ("dev_auc", "test_auc", "test_logloss", "best_step"):
        assert got[k] == pytest.approx(single[k], abs=TOL), k
