"""Peers' side of the side-by-side benchmark; runs in the PEERS' venv (benchmarks/peers/setup.sh).

Protocol (one JSON object per line on stdin, one per line on stdout):
  {"cmd": "init", "store": DIR, "system": "fuxictr"|"deepctr", "model": "deepfm"|"dcn"|"pnn"|"fibinet", "batch": 4000, "seed": 0}
  {"cmd": "steps", "n": K}     -> {"times": [seconds per train step]}
  {"cmd": "eval", "batch": b, "passes": k} -> {"seconds": s (fastest pass), "rows": n, "auc": a}
  {"cmd": "job", "store": DIR, "system": ..., "model": ..., "batch": 4000, "seed": 0, "fuxictr_format": "parquet"|"npz"}
      -> {"build_s", "fit_s", "score_s", "train_rows", "test_rows", "test_auc"}: a whole training job through the system's OWN
      user-facing API (benchmarks/peers/jobs.py): FuxiCTR's RankDataLoader + fit(validation_data)
      + evaluate(test); DeepCTR-Torch's fit(validation_data) + evaluate(test). Data written in
      the system's own format once per process (not timed: that is its preprocessing).
The data is mutualctr's prepared store (train/test .npy id matrices, feature_map.json): each
field's global ids minus the field's offset are the per-field category indices both peers expect,
so all three systems see the same encoded rows in the same order.

FuxiCTR 2.3.10's PyPI package ships the layers and BaseModel but not the model zoo, so DeepFM,
DCN, PNN and FiBiNET are composed here from its installed layers as its model zoo composes them
(model_zoo/<Model>/src/<Model>.py), and trained with its own
BaseModel.train_step (its loss + whole-table L2 regulariser + gradient clipping + Adam).
DeepCTR-Torch 0.3.0: its DeepFM, DCN, PNN and FiBiNET classes and the body of its fit() loop (sum-reduced BCE +
get_regularization_loss + Adam).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

STATE = {}


def load_store(path):
    fm = json.load(open(f"{path}/feature_map.json"))
    fields = fm["fields"]
    offsets = np.array([f["offset"] for f in fields], dtype=np.int64)
    vocab = [int(f["vocab_size"]) for f in fields]
    names = [f["name"] for f in fields]
    X = np.load(f"{path}/train.X.npy", mmap_mode="r")
    y = np.load(f"{path}/train.y.npy", mmap_mode="r")
    Xt = np.load(f"{path}/test.X.npy", mmap_mode="r")
    yt = np.load(f"{path}/test.y.npy", mmap_mode="r")
    return names, vocab, offsets, X, y, Xt, yt


def fuxictr_model(name, names, vocab, emb_dim, hidden, l2, out_dir, metrics=("AUC",)):
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.layers import (
        BilinearInteractionV2, CrossNet, FactorizationMachine, FeatureEmbedding, InnerProductInteraction,
        LogisticRegression, MLP_Block, SqueezeExcitation,
    )
    from fuxictr.pytorch.models import BaseModel

    fmap = FeatureMap("synth", out_dir)
    for n, v in zip(names, vocab):
        fmap.features[n] = {"type": "categorical", "vocab_size": v, "source": ""}
    fmap.labels = ["label"]
    fmap.default_emb_dim = emb_dim
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()
    common = dict(model_root=out_dir, verbose=0, metrics=list(metrics), optimizer="adam", loss="binary_crossentropy",
                  embedding_regularizer=l2, net_regularizer=0)

    def mlp(input_dim, output_dim=1):
        return MLP_Block(input_dim=input_dim, output_dim=output_dim, hidden_units=hidden, hidden_activations="ReLU",
                         output_activation=None, dropout_rates=0, batch_norm=False)

    class Zoo(BaseModel):
        """What every fuxictr model_zoo model does around its own layers: the embedding first,
        then (``ready``) compile, reset_parameters, model_to_device."""

        def __init__(self, feature_map, model_id, **kw):
            super().__init__(feature_map, model_id=model_id, gpu=-1, **kw)
            self.embedding_layer = FeatureEmbedding(feature_map, emb_dim)

        def ready(self, kw, learning_rate):
            self.compile(kw["optimizer"], kw["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

    class DeepFM(Zoo):  # = fuxictr model_zoo/DeepFM
        def __init__(self, feature_map, learning_rate=1e-3, **kw):
            super().__init__(feature_map, "DeepFM", **kw)
            self.fm = FactorizationMachine(feature_map)
            self.mlp = mlp(feature_map.sum_emb_out_dim())
            self.ready(kw, learning_rate)

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X)
            y_pred = self.fm(X, feature_emb)
            y_pred += self.mlp(feature_emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(y_pred)}

    class DCN(Zoo):  # = fuxictr model_zoo/DCN
        def __init__(self, feature_map, learning_rate=1e-3, **kw):
            super().__init__(feature_map, "DCN", **kw)
            input_dim = feature_map.sum_emb_out_dim()
            self.dnn = mlp(input_dim, output_dim=None)
            self.crossnet = CrossNet(input_dim, 3)
            self.fc = nn.Linear(input_dim + hidden[-1], 1)
            self.ready(kw, learning_rate)

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X, flatten_emb=True)
            out = torch.cat([self.crossnet(feature_emb), self.dnn(feature_emb)], dim=-1)
            return {"y_pred": self.output_activation(self.fc(out))}

    class PNN(Zoo):  # = fuxictr model_zoo/PNN (product_type "inner")
        def __init__(self, feature_map, learning_rate=1e-3, **kw):
            super().__init__(feature_map, "PNN", **kw)
            f = feature_map.num_fields
            self.inner_product_layer = InnerProductInteraction(f, output="inner_product")
            self.dnn = mlp(f * (f - 1) // 2 + f * emb_dim)
            self.ready(kw, learning_rate)

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X)
            inner = self.inner_product_layer(feature_emb)
            y_pred = self.dnn(torch.cat([feature_emb.flatten(start_dim=1), inner], dim=1))
            return {"y_pred": self.output_activation(y_pred)}

    class FiBiNET(Zoo):  # = fuxictr model_zoo/FiBiNET (field_interaction, reduction 3)
        def __init__(self, feature_map, learning_rate=1e-3, **kw):
            super().__init__(feature_map, "FiBiNET", **kw)
            f = feature_map.num_fields
            self.senet_layer = SqueezeExcitation(f, 3, "ReLU")
            self.bilinear_interaction1 = BilinearInteractionV2(f, emb_dim, "field_interaction")
            self.bilinear_interaction2 = BilinearInteractionV2(f, emb_dim, "field_interaction")
            self.lr_layer = LogisticRegression(feature_map, use_bias=False)
            self.dnn = mlp(f * (f - 1) * emb_dim)
            self.ready(kw, learning_rate)

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            feature_emb = self.embedding_layer(X)
            p = self.bilinear_interaction1(feature_emb)
            q = self.bilinear_interaction2(self.senet_layer(feature_emb))
            y_pred = self.lr_layer(X) + self.dnn(torch.flatten(torch.cat([p, q], dim=1), start_dim=1))
            return {"y_pred": self.output_activation(y_pred)}

    model = {"deepfm": DeepFM, "dcn": DCN, "pnn": PNN, "fibinet": FiBiNET}[name](fmap, **common)
    model._max_gradient_norm = 10.0  # fit()'s default

    def batch(ids, labels):
        d = {n: torch.from_numpy(np.ascontiguousarray(ids[:, i])) for i, n in enumerate(names)}
        d["label"] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        return d

    def train_step(ids, labels):
        model.train()
        return model.train_step(batch(ids, labels))

    @torch.no_grad()
    def predict(ids):
        model.eval()
        return model.forward(batch(ids, np.zeros(len(ids))))["y_pred"].reshape(-1).numpy()

    return model, train_step, predict


def deepctr_model(name, names, vocab, emb_dim, hidden, l2, metrics=None):
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DCN, PNN, DeepFM, FiBiNET

    cols = [SparseFeat(n, vocabulary_size=v, embedding_dim=emb_dim) for n, v in zip(names, vocab)]
    if name == "deepfm":
        model = DeepFM(cols, cols, dnn_hidden_units=tuple(hidden), l2_reg_embedding=l2, device="cpu")
    elif name == "dcn":
        model = DCN(cols, cols, cross_num=3, dnn_hidden_units=tuple(hidden), l2_reg_embedding=l2, device="cpu")
    elif name == "pnn":
        model = PNN(cols, dnn_hidden_units=tuple(hidden), l2_reg_embedding=l2, use_inner=True, use_outter=False,
                    device="cpu")
    else:
        model = FiBiNET(cols, cols, bilinear_type="interaction", reduction_ratio=3,
                        dnn_hidden_units=tuple(hidden), l2_reg_embedding=l2, device="cpu")
    model.compile("adam", "binary_crossentropy", metrics=metrics)
    optim, loss_func = model.optim, model.loss_func

    def train_step(ids, labels):  # the body of deepctr_torch BaseModel.fit's batch loop
        model.train()
        x = torch.from_numpy(np.asarray(ids, dtype=np.float32))
        y = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        y_pred = model(x).squeeze()
        optim.zero_grad()
        loss = loss_func(y_pred, y.squeeze(), reduction="sum")
        total = loss + model.get_regularization_loss() + model.aux_loss
        total.backward()
        optim.step()
        return total

    @torch.no_grad()
    def predict(ids):
        model.eval()
        return model(torch.from_numpy(np.asarray(ids, dtype=np.float32))).reshape(-1).numpy()

    return model, train_step, predict


def _metrics():
    """mutualctr's metrics module (numpy only), loaded by path: this venv has no mutualctr
    installed, and the peers' AUC must be the one mutualctr's own figures use (tie-aware)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "mutualctr", "metrics.py")
    spec = importlib.util.spec_from_file_location("mutualctr_metrics", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


auc = _metrics().auc


def handle(msg):
    cmd = msg["cmd"]
    if cmd == "init":
        torch.manual_seed(msg.get("seed", 0))
        if msg.get("threads"):
            torch.set_num_threads(msg["threads"])
        names, vocab, offsets, X, y, Xt, yt = load_store(msg["store"])
        tmp = tempfile.mkdtemp()
        args = (msg["model"], names, vocab, 16, [400, 200, 100], 1e-5)
        _, step, predict = fuxictr_model(*args, tmp) if msg["system"] == "fuxictr" else deepctr_model(*args)
        rng = np.random.default_rng([msg.get("seed", 0), 0])
        STATE.update(step=step, predict=predict, X=X, y=y, Xt=Xt, yt=yt, offsets=offsets,
                     perm=rng.permutation(len(y)), batch=msg.get("batch", 4000), k=0)
        return {"ok": True, "torch": torch.__version__}
    if cmd == "steps":
        s, times = STATE, []
        for _ in range(msg["n"]):
            bs, n = s["batch"], len(s["y"])
            lo = (s["k"] * bs) % max(n - bs, 1)
            idx = np.sort(s["perm"][lo:lo + bs])
            ids = np.asarray(s["X"][idx], dtype=np.int64) - s["offsets"]
            labels = np.asarray(s["y"][idx], dtype=np.float32)
            t = time.perf_counter()
            loss = s["step"](ids, labels)
            float(loss.detach())
            times.append(time.perf_counter() - t)
            s["k"] += 1
        return {"times": times}
    if cmd == "eval":
        s = STATE
        Xt = np.asarray(s["Xt"], dtype=np.int64) - s["offsets"]
        bs, dts = int(msg.get("batch", 32768)), []
        for _ in range(int(msg.get("passes", 1))):  # the fastest of the passes
            t = time.perf_counter()
            preds = np.concatenate([s["predict"](Xt[i:i + bs]) for i in range(0, len(Xt), bs)])
            dts.append(time.perf_counter() - t)
        return {"seconds": min(dts), "rows": int(len(Xt)), "auc": auc(np.asarray(s["yt"]), preds)}
    if cmd == "job":
        return job(msg)
    raise ValueError(cmd)


DATA = {}  # (store, format) -> FuxiCTR's input files, written once per process


def split_ids(path, split, offsets):
    X = np.load(f"{path}/{split}.X.npy") - offsets  # per-field indices
    return X, np.load(f"{path}/{split}.y.npy").astype(np.float32)


def fuxictr_data(store, names, offsets, fmt):
    """Each split as FuxiCTR's own loaders read it: one .npz (NpzDataLoader) or one .parquet file
    (ParquetDataLoader, Ray Data; what FuxiCTR 2.3.10 uses for csv inputs), a column per field."""
    key = (store, fmt)
    if key not in DATA:
        d = tempfile.mkdtemp()
        paths = {}
        for split, name in (("train", "train"), ("dev", "valid"), ("test", "test")):
            X, y = split_ids(store, split, offsets)
            cols = {n: X[:, i] for i, n in enumerate(names)} | {"label": y}
            if fmt == "npz":
                paths[name] = f"{d}/{name}.npz"
                np.savez(paths[name], **cols)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                paths[name] = f"{d}/{name}.parquet"
                pq.write_table(pa.table(cols), paths[name])
        DATA[key] = paths
    return DATA[key]


def job(msg):
    """One training job as a user of the system runs it: build, fit one epoch with validation on
    dev (the system's own loop, loader, checkpointing), then score test with its evaluate()."""
    torch.manual_seed(msg.get("seed", 0))
    np.random.seed(msg.get("seed", 0))
    store, system, bs = msg["store"], msg["system"], int(msg.get("batch", 4000))
    names, vocab, offsets, _, y_train, _, y_test = load_store(store)
    args = (msg["model"], names, vocab, 16, [400, 200, 100], 1e-5)
    if system == "fuxictr":
        from fuxictr.pytorch.dataloaders import RankDataLoader

        fmt = msg.get("fuxictr_format", "parquet")
        paths = fuxictr_data(store, names, offsets, fmt)
        out = tempfile.mkdtemp()
        t0 = time.perf_counter()
        model, _, _ = fuxictr_model(*args, out, metrics=("logloss", "AUC"))
        os.makedirs(model.model_dir, exist_ok=True)  # its run_expid.py's logger set-up makes it
        kw = dict(data_format=fmt, batch_size=bs)
        train_gen, valid_gen = RankDataLoader(model.feature_map, stage="train", train_data=paths["train"],
                                              valid_data=paths["valid"], shuffle=True, **kw)
        test_gen = RankDataLoader(model.feature_map, stage="test", test_data=paths["test"], shuffle=False, **kw)
        try:
            t1 = time.perf_counter()
            model.fit(train_gen, epochs=1, validation_data=valid_gen)
            t2 = time.perf_counter()
            test = model.evaluate(test_gen)
            t3 = time.perf_counter()
        finally:  # a user's job ends its process, and with it Ray's; idle Ray processes would slow the next job
            if fmt == "parquet":
                import ray

                ray.shutdown()
        auc_ = float(test["AUC"])
    else:
        X, y = split_ids(store, "train", offsets)
        Xd, yd = split_ids(store, "dev", offsets)
        Xt, yt = split_ids(store, "test", offsets)
        cols = lambda A: {n: A[:, i] for i, n in enumerate(names)}  # noqa: E731
        t0 = time.perf_counter()
        # the metrics of DeepCTR-Torch's README example; fit computes them on every batch
        model, _, _ = deepctr_model(*args, metrics=["binary_crossentropy", "auc"])
        t1 = time.perf_counter()
        model.fit(cols(X), y, batch_size=bs, epochs=1, verbose=0, validation_data=(cols(Xd), yd))
        t2 = time.perf_counter()
        test = model.evaluate(cols(Xt), yt, batch_size=bs)
        t3 = time.perf_counter()
        auc_ = float(test["auc"])
    return {"build_s": t1 - t0, "fit_s": t2 - t1, "score_s": t3 - t2, "train_rows": len(y_train),
            "test_rows": len(y_test), "test_auc": auc_}


def main():
    for line in sys.stdin:
        try:
            out = handle(json.loads(line))
        except Exception as e:  # report, keep serving
            import traceback
            out = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
