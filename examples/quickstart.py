"""mutualctr from Python, end to end in about 10 s on two idle CPU cores (docs/performance.md):
synthetic rows -> a store -> two DeepFM runs -> mutual finetuning -> an ensemble -> predictions.

    python examples/quickstart.py [WORKDIR]

Everything goes to WORKDIR (default: a new temporary directory). Swap the synthetic file for
your own Criteo or Avazu rows (``mc.prepare("criteo", ["train.txt"], ...)``) or any CTR table
with a schema YAML (docs/data.md).
"""

import sys
import tempfile
from pathlib import Path

import mutualctr as mc


def main(work: Path) -> None:
    synth = mc.synth(21_000, work / "all.tsv", seed=0)
    print(f"{synth.rows:,} synthetic rows; the generator's own AUC (the ceiling) is {synth.ceiling_auc:.4f}")
    lines = synth.path.read_text().splitlines(keepends=True)
    raw, new_rows = work / "synth.tsv", work / "new_rows.tsv"  # 20,000 rows to learn from, 1,000 new ones
    raw.write_text("".join(lines[:20_000]))
    new_rows.write_text("".join(lines[20_000:]))

    store = mc.prepare("criteo", raw, work / "store").store
    print(f"store: {store.feature_map.num_features:,} embedding rows over {store.feature_map.num_fields} fields")

    # two instances of the paper's DeepFM (the shipped Criteo config), a short schedule for the small data
    runs = [mc.train(store.path, work / f"runs/deepfm-{s}", model="deepfm", seed=s, epochs=2, batch_size=500)
            for s in (1, 2)]
    for r in runs:
        print(f"deepfm seed {r.seed}: test AUC {r.test_auc:.5f} (best dev {r.dev_auc:.5f} at step {r.best_step})")

    # mutual finetuning of the two; alpha is chosen on dev (the default, alpha="auto")
    g = mc.mutual(store.path, work / "groups/deepfm-x2", init=[r.run_dir for r in runs])
    for p in g.alpha_search:
        print(f"  alpha {p.alpha:>6g}: mean dev AUC {p.dev_auc:.5f}, test AUC {p.test_auc:.5f}")
    print(f"chosen alpha {g.settings.alpha:g}: mean test AUC {g.mean.start_test_auc:.5f} -> {g.mean.test_auc:.5f} "
          f"({g.mean.relaimp_test:+.3f}% RelaImp); churn {g.churn.before.mean_abs_diff:.4f} -> "
          f"{g.churn.after.mean_abs_diff:.4f}; members that kept their start: "
          f"{sum(bool(m.kept_start) for m in g.members)} of {len(g.members)}")

    e = mc.ensemble([m.run_dir for m in g.members], store.path)
    print(f"ensemble of the finetuned members: test AUC {e.auc:.5f}")

    preds = mc.predict(g.members[0].run_dir, new_rows, work / "preds.csv", keep=["label"])
    print(f"wrote {preds.rows:,} probabilities to {preds.out} (AUC {preds.auc:.5f} on the file's labels)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as d:
            main(Path(d))
