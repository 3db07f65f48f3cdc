"""A torchrun-style worker for the tests: runs a list of api jobs in one gloo process group.

Started by tests/distributed/test_distributed.py with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set (what torchrun sets); writes its results as JSON to ``<result>.<rank>``.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path


def main(spec_path: str) -> None:
    import torch.distributed as dist

    from mutualctr.training import jobs as api
    from mutualctr.training.config import run_config_from_dict

    spec = json.load(open(spec_path))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=spec.get("timeout", 60)))
    out = {}
    for job in spec["jobs"]:
        if job["op"] == "train":
            out[job["name"]] = api.train(job["store"], job["out"], run_config_from_dict(job["config"]), quiet=True,
                                          resume=job.get("resume", False)).to_dict()
        else:
            kw = dict(job["kwargs"])
            kw["config_dir"] = Path(kw["config_dir"]) if kw.get("config_dir") else None
            out[job["name"]] = api.mutual_from_flags(job["store"], job["out"], quiet=True, **kw).to_dict()
    # process groups still registered after the jobs: the default one only (each job's session
    # releases its subgroups); None where torch's registry is not where we look
    world = getattr(dist.distributed_c10d, "_world", None)
    out["_groups_left"] = len(world.pg_map) if world is not None and hasattr(world, "pg_map") else None
    with open(f"{spec['result']}.{dist.get_rank()}", "w") as f:
        json.dump(out, f, default=float)
    dist.barrier()  # see mutualctr.distributed.context.session: no rank tears down before all are done
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
