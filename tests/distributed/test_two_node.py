"""Two nodes: two torchrun launcher agents on this machine meet in a c10d rendezvous.

Each agent is what `torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d
--rdzv-endpoint HOST:PORT` starts on one node of a two-machine job: it joins the rendezvous,
learns its node's place in the job and starts one worker with the rank, world size and
store address the rendezvous gave it. Here both nodes are localhost (node 0 hosts the
rendezvous store, as host0 does in docs/distributed.md). The workers run the jobs of the
2-process tests (tests/distributed/_worker.py): data-parallel `train` and a one-member-per-
worker `mutual`, which must match the single-process runs as closely as they do there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mutualctr
from mutualctr.training import jobs as api
from mutualctr.training.config import run_config_from_dict
from tests.distributed.test_distributed import _assert_runs_match, _cfg, _config_dir, _free_port

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT = 150  # seconds for both agents (rendezvous, 2 jobs, exit barrier); ~15 s normally


def _require_gloo() -> None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    try:
        import torch.distributed.run  # noqa: F401  (the launcher the agents run)
    except ImportError as e:
        pytest.skip(f"torch.distributed.run cannot be imported: {e}")


def _agent(node_rank: int, port: int, run_id: str, spec: Path, log: Path) -> subprocess.Popen:
    """One node's launcher agent. ``--node-rank`` is what a user passes on each node; the c10d
    rendezvous ignores it and ranks the nodes itself, so which node's worker is rank 0 is the
    rendezvous' choice. ``is_host`` says which agent serves the rendezvous store (on two machines
    the one whose address is the endpoint's; here both would match ``localhost``)."""
    src = str(Path(mutualctr.__file__).resolve().parents[1])  # the mutualctr under test
    env = dict(os.environ, OMP_NUM_THREADS="1", LOGLEVEL="INFO", PYTHONFAULTHANDLER="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), src, os.environ.get("PYTHONPATH", "")]))
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(k, None)  # a test run under torchrun must not leak its own job into these
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", run_id,
           "--rdzv-conf", f"is_host={int(node_rank == 0)},join_timeout=60,read_timeout=60",
           "--node-rank", str(node_rank), "--max-restarts", "0", "--monitor-interval", "0.5",
           "-m", "tests.distributed._worker", str(spec)]
    # own session: on failure the agent and its worker are killed together, by process group
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()


@pytest.fixture(scope="module")
def two_nodes(tiny_store, tmp_path_factory):
    _require_gloo()
    tmp = tmp_path_factory.mktemp("two_node")
    cdir = _config_dir(tmp)
    jobs = [
        {"op": "train", "name": "dp", "store": str(tiny_store), "out": str(tmp / "dp"), "config": _cfg()},
        {"op": "mutual", "name": "mutual", "store": str(tiny_store), "out": str(tmp / "mutual"),
         "kwargs": {"models": ["deepfm", "dcn"], "seeds": [1, 2], "epochs": 2, "evals_per_epoch": 2,
                    "config_dir": str(cdir), "alpha": 1.0}},
    ]
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"jobs": jobs, "result": str(tmp / "result"), "timeout": 60}))
    port, run_id = _free_port(), f"mutualctr-two-node-{os.getpid()}-{time.time_ns()}"
    logs = [tmp / f"agent{r}.log" for r in range(2)]
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    agents = [_agent(r, port, run_id, spec, logs[r]) for r in range(2)]
    try:
        # the single-process references run here while the agents start and meet
        threads = torch.get_num_threads()
        single = {
            "dp": api.train(tiny_store, tmp / "single_dp", run_config_from_dict(_cfg()), quiet=True).to_dict(),
            "mutual": api.mutual_from_flags(tiny_store, tmp / "single_mutual", models=["deepfm", "dcn"],
                                            seeds=[1, 2], epochs=2, evals_per_epoch=2, config_dir=cdir,
                                            alpha=1.0, quiet=True).to_dict(),
        }
        torch.set_num_threads(threads)
        # until both end; one that fails ends the launch (the other would wait out its timeouts)
        while any(a.poll() is None for a in agents) and all(a.poll() in (None, 0) for a in agents):
            if time.monotonic() > deadline:
                pytest.fail(f"the two agents did not finish within {LAUNCH_TIMEOUT} s; agent logs:\n"
                            + "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs))
            time.sleep(0.1)
    finally:
        _kill(agents)
    text = [p.read_text() for p in logs]
    for a, t in zip(agents, text):
        assert a.returncode == 0, f"agent exit {a.returncode}:\n{t[-4000:]}"
    return {"tmp": tmp, "single": single, "logs": text,
            "results": [json.loads((tmp / f"result.{r}").read_text()) for r in range(2)]}


def test_two_agents_form_one_job_of_two_nodes(two_nodes):
    """Each agent's rendezvous ended in the same 2-node job, with a node rank of its own."""
    ranks = []
    for t in two_nodes["logs"]:
        rank, size = re.search(r"\bgroup_rank=(\d+)", t), re.search(r"\bgroup_world_size=(\d+)", t)
        assert rank and size, t[-3000:]  # the agent's INFO line on the rendezvous result
        ranks.append(int(rank.group(1)))
        assert int(size.group(1)) == 2
    assert sorted(ranks) == [0, 1]


def test_data_parallel_train_on_two_nodes_equals_one_process(two_nodes):
    r0, r1 = (r["dp"] for r in two_nodes["results"])
    timing = ("train_time_s", "samples_per_s")
    assert {k: v for k, v in r0.items() if k not in timing} == {k: v for k, v in r1.items() if k not in timing}
    _assert_runs_match(two_nodes["tmp"] / "single_dp", two_nodes["tmp"] / "dp", two_nodes["single"]["dp"], r0,
                       weights_atol=1e-4)


def test_mutual_one_member_per_node_equals_one_process(two_nodes):
    g0, g1 = (r["mutual"] for r in two_nodes["results"])
    assert [m["model"] for m in g0["members"]] == ["deepfm", "dcn"]
    assert [m["test_auc"] for m in g0["members"]] == [m["test_auc"] for m in g1["members"]]
    multi = two_nodes["tmp"] / "mutual"
    assert json.loads((multi / "group.json").read_text())["settings"]["workers"] == 2
    for i, (s, m) in enumerate(zip(two_nodes["single"]["mutual"]["members"], g0["members"])):
        name = f"m{i}-{s['model']}"
        _assert_runs_match(two_nodes["tmp"] / "single_mutual" / name, multi / name, s, m, weights_atol=1e-5)
