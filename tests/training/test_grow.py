"""``prepare --vocab-from PARENT --grow`` and the parent's runs on the grown store (issue 27)."""

from __future__ import annotations

import numpy as np
import pytest

from mutualctr import api
from mutualctr.data.prepare import prepare
from mutualctr.data.store import FIRST, Store
from mutualctr.data.synth import generate
from mutualctr.errors import CheckpointError
from mutualctr.training.inference import predict_logits
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Three days of synthetic rows (other seeds: many new values each day), day 2 grown from day
    1 and day 3 from day 2, and a run on day 1."""
    root = tmp_path_factory.mktemp("days")
    for d in (1, 2, 3):
        generate(2500, root / f"d{d}.txt", seed=10 + d, progress=False)
    s1 = prepare("criteo", [root / "d1.txt"], root / "s1", min_count=2, progress=False).store
    s2 = prepare("criteo", [root / "d2.txt"], root / "s2", vocab_from=root / "s1", grow=True, progress=False).store
    s3 = prepare("criteo", [root / "d3.txt"], root / "s3", vocab_from=root / "s2", grow=True, progress=False).store
    run = api.train(root / "s1", root / "r1", config=tiny_config(epochs=1), seed=1, quiet=True)
    return root, (s1, s2, s3), run.run_dir


def _old_rows(parent: Store, child: Store):
    """Rows with only ids the parent has, in the child's ids and in the parent's: the parent's test
    rows, and the child's test rows with every new value set to its field's OOV id (local 0)."""
    p_off = np.array([f.offset for f in parent.feature_map.fields])
    c_off = np.array([f.offset for f in child.feature_map.fields])
    p_size = np.array([f.vocab_size for f in parent.feature_map.fields])
    local_p = np.asarray(parent.split("test")[0]).astype(np.int64) - p_off
    local_c = np.asarray(child.split("test")[0]).astype(np.int64) - c_off
    local_c = np.where(local_c < p_size, local_c, 0)
    local = np.concatenate([local_p, local_c])
    return local + c_off, local + p_off


def test_grow_keeps_every_parent_id_and_adds_new_ones(days):
    _, (s1, s2, s3), _ = days
    grew = False
    for parent, child in ((s1, s2), (s2, s3)):
        for i, (pf, cf) in enumerate(zip(parent.feature_map.fields, child.feature_map.fields)):
            old, new = parent.vocab(i).to_pylist(), child.vocab(i).to_pylist()
            assert new[:len(old)] == old  # value j keeps local id FIRST + j
            assert cf.vocab_size == FIRST + len(new) >= pf.vocab_size
            grew |= len(new) > len(old)
            assert not set(new[len(old):]) & set(old)
        assert child.feature_map.parent["grown"] is True
        assert child.vocab_fingerprint != parent.vocab_fingerprint
    assert grew and s2.feature_map.num_features > s1.feature_map.num_features
    assert set(s3.feature_map.parent["ancestors"]) == {s1.vocab_fingerprint, s2.vocab_fingerprint}
    # a value of the parent encodes to the same local id in the child
    from mutualctr.data.fields import Encoder

    v = s1.vocab(20)[3:4]
    for store in (s1, s2, s3):
        f = store.feature_map.fields[20]
        assert Encoder.for_store(store).column(20, v)[0] - f.offset == FIRST + 3


def test_a_parent_run_on_the_grown_store_predicts_old_rows_exactly(days):
    root, (s1, s2, s3), run = days
    parent = api.load_run(run, s1.path).model
    for child in (s2, s3):  # the chain: day 1's run on day 3 too
        grown = api.load_run(run, child.path).model
        Xc, Xp = _old_rows(s1, child)
        assert len(Xc) > 20
        np.testing.assert_array_equal(predict_logits(grown, Xc, 0, "cpu"), predict_logits(parent, Xp, 0, "cpu"))
        e = api.evaluate(run, child.path)
        assert 0 < e.auc < 1 and e.rows == child.rows("test")  # (another seed: other synthetic truth)


def test_warm_start_and_evaluate_on_the_grown_store(days):
    root, (s1, s2, s3), run = days
    warm = api.train(s2.path, root / "w2", init=run, epochs=1, lr=1e-3, quiet=True, threads=1)
    assert warm.init_from is not None and warm.fingerprint == s2.fingerprint
    first = api.load_run(root / "w2", s3.path)  # day 2's update on day 3: grown again
    assert first.model is not None
    churn = api.churn(root / "w2", run, s2.path)
    assert churn.rows == s2.rows("test") and churn.mean_abs_diff > 0
    raw = root / "d2.txt"  # predict: the parent's run on the grown store's raw rows
    p = api.predict(run, raw, root / "p.csv", data=s2.path)
    assert p.rows == 2500 and p.auc is not None
    e = api.export(root / "w2", root / "export", format="torchscript", check=True)  # the update, exported
    assert e.num_features == s2.feature_map.num_features


def test_grow_bad_input(days, tmp_path):
    from mutualctr.config import ConfigError

    root, (s1, s2, s3), run = days
    with pytest.raises(ConfigError, match="--grow: needs --vocab-from"):
        prepare("criteo", [root / "d2.txt"], tmp_path / "x", grow=True, progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(CheckpointError, match="not grown from it"):
        other = prepare("criteo", [root / "d3.txt"], tmp_path / "o", min_count=2, progress=False).store
        api.load_run(run, other.path)


def test_grow_with_a_hashed_field_keeps_its_buckets(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    (tmp_path / "s.yaml").write_text("label: y\ncategorical: [item, site]\nhashed: {user: {buckets: 50}}\n")
    for d, lo in ((1, 0), (2, 30)):  # day 2 brings items 30..59, 30 of them new
        lines = ["y,user,item,site"] + [f"{int(rng.random() < 0.3)},u{rng.integers(0, 500)},i{rng.integers(lo, lo + 30)},"
                                        f"s{rng.integers(0, 5)}" for _ in range(1500)]
        (tmp_path / f"d{d}.csv").write_text("\n".join(lines) + "\n")
    s1 = prepare(str(tmp_path / "s.yaml"), [tmp_path / "d1.csv"], tmp_path / "s1", progress=False).store
    s2 = prepare(str(tmp_path / "s.yaml"), [tmp_path / "d2.csv"], tmp_path / "s2", vocab_from=tmp_path / "s1",
                 grow=True, progress=False).store
    f1, f2 = s1.feature_map, s2.feature_map
    assert [f.name for f in f2.fields] == ["user", "item", "site"]
    assert f2.field("user").vocab_size == f1.field("user").vocab_size == 52  # hashed: nothing grows
    assert f2.field("item").vocab_size == 2 + 60 and f2.field("site").offset > f1.field("site").offset
    run = api.train(s1.path, tmp_path / "r", config=tiny_config(epochs=1), seed=1, quiet=True)
    Xc, Xp = _old_rows(s1, s2)
    np.testing.assert_array_equal(predict_logits(api.load_run(run.run_dir, s2.path).model, Xc, 0, "cpu"),
                                  predict_logits(api.load_run(run.run_dir, s1.path).model, Xp, 0, "cpu"))


# ---- list fields: a multi-valued field and a sequence sharing the item ids ---------------------

_LIST_SCHEMA = ("label: y\ncategorical: [user, item]\nmulti_valued: {tags: {max_length: 3, separator: '|', pooling: mean}}\n"
                "sequence: {hist: {max_length: 4, separator: '|', vocab_from: item}}\ndense: {price: {transform: standardize}}\n")


def _list_day(path, rng, lo: int, rows: int = 1500) -> None:
    """Rows of one day: items and tags from ``lo`` on (a later day brings new ones), the history a
    few earlier items of the day's range."""
    lines = ["y,user,item,tags,hist,price"]
    for _ in range(rows):
        item = rng.integers(lo, lo + 40)
        tags = "|".join(f"t{t}" for t in rng.choice(np.arange(lo // 4, lo // 4 + 12), rng.integers(0, 4), replace=False))
        hist = "|".join(f"i{h}" for h in rng.integers(lo, lo + 40, rng.integers(0, 6)))
        y = int(rng.random() < 0.2 + 0.4 * (item % 3 == 0))
        lines.append(f"{y},u{rng.integers(lo * 4, lo * 4 + 200)},i{item},{tags},{hist},{rng.normal(10, 3):.2f}")
    path.write_text("\n".join(lines) + "\n")


def _relaid(arrays, src: Store, dst: Store, old_sizes: dict[str, int] | None = None):
    """``arrays`` (a split of ``src``) in ``dst``'s ids: each field's local ids kept, a local id at or
    past ``old_sizes[field]`` set to the field's OOV (0); pads stay 0."""
    from mutualctr.data.store import SplitArrays

    sf, df = src.feature_map, dst.feature_map

    def move(ids, name):
        f = sf.field(name)
        src_off = sf.field(f.spec["vocab_from"]).offset if (f.spec or {}).get("vocab_from") else f.offset
        dst_off = df.field(name).offset
        local = np.asarray(ids).astype(np.int64) - src_off
        if old_sizes is not None:
            local = np.where(local < old_sizes[name], local, 0)
        return local + dst_off

    X = np.stack([move(arrays.X[:, j], sf.fields[i].name) for j, i in enumerate(sf.id_fields)], axis=1)
    bags = {k: np.where(np.asarray(v) == 0, 0, move(v, k)).astype(np.int32) for k, v in arrays.bags.items()}
    return SplitArrays(X.astype(np.int32), arrays.y, bags, arrays.values, arrays.missing)


@pytest.fixture(scope="module")
def list_days(tmp_path_factory):
    root = tmp_path_factory.mktemp("listdays")
    (root / "s.yaml").write_text(_LIST_SCHEMA)
    rng = np.random.default_rng(3)
    for d, lo in ((1, 0), (2, 16), (3, 32)):  # each day: 16 new items, about 4 new tags
        _list_day(root / f"d{d}.csv", rng, lo)
    stores = []
    for d in (1, 2, 3):
        parent = None if d == 1 else root / f"s{d - 1}"
        stores.append(prepare(str(root / "s.yaml"), [root / f"d{d}.csv"], root / f"s{d}", vocab_from=parent,
                              grow=parent is not None, progress=False).store)
    run = api.train(root / "s1", root / "r1", config=tiny_config(epochs=1), seed=1, quiet=True)
    return root, stores, run.run_dir


def test_grow_list_fields_keeps_every_parent_id(list_days):
    _, (s1, s2, s3), _ = list_days
    for parent, child in ((s1, s2), (s2, s3)):
        pf, cf = parent.feature_map, child.feature_map
        for name in ("item", "tags", "user"):
            old, new = parent.vocab(name).to_pylist(), child.vocab(name).to_pylist()
            assert new[:len(old)] == old and len(new) > len(old) and not set(new[len(old):]) & set(old)
            assert cf.field(name).vocab_size == FIRST + len(new)
        # the sequence shares the item ids, grown with them
        assert (cf.field("hist").offset, cf.field("hist").vocab_size) == (cf.field("item").offset, cf.field("item").vocab_size)
        assert cf.field("tags").spec == pf.field("tags").spec and cf.field("hist").spec == pf.field("hist").spec
        assert min(f.offset for f in cf.fields) == 1 and cf.pad_index == 0  # the pad id stays 0
        # a parent row and the same raw values in the child: the same local ids everywhere
        back = _relaid(_relaid(parent.split("test")[0], parent, child), child, parent)
        Xp = parent.split("test")[0]
        np.testing.assert_array_equal(back.X, Xp.X)
        for k in Xp.bags:
            np.testing.assert_array_equal(back.bags[k], Xp.bags[k])
    # the child's own encoding: new items got local ids past the parent's, in the item column and the history
    item1, item2 = s1.feature_map.field("item"), s2.feature_map.field("item")
    hist = np.asarray(s2.split("train")[0].bags["hist"])
    local = hist[hist != 0] - item2.offset
    assert (local >= item1.vocab_size).any() and (local < item2.vocab_size).all()


def test_a_parent_run_on_a_grown_list_store_predicts_old_rows_exactly(list_days):
    root, (s1, s2, s3), run = list_days
    parent = api.load_run(run, s1.path).model
    sizes = {f.name: f.vocab_size for f in s1.feature_map.fields}
    sizes["hist"] = sizes["item"]
    for child in (s2, s3):  # day 1's run on day 2 and, through the chain, on day 3
        grown = api.load_run(run, child.path).model
        state, old = grown.state_dict(), parent.state_dict()
        table = next(k for k, v in old.items() if v.shape[0] == s1.feature_map.num_features and v.dim() == 2)
        for f1 in s1.feature_map.fields:  # every parent row at its new place, exactly
            f = child.feature_map.field(f1.name)
            np.testing.assert_array_equal(state[table][f.offset:f.offset + f1.vocab_size].numpy(),
                                          old[table][f1.offset:f1.offset + f1.vocab_size].numpy())
        rows = child.split("test")[0]
        Xc = _relaid(_relaid(rows, child, s1, sizes), s1, child)  # only old ids, in the child's layout
        Xp = _relaid(rows, child, s1, sizes)  # the same rows in the parent's
        assert (np.asarray(rows.X) != Xc.X).any() and len(rows) > 100  # new ids were there, now OOV
        np.testing.assert_array_equal(predict_logits(grown, Xc, 0, "cpu"), predict_logits(parent, Xp, 0, "cpu"))
    warm = api.train(s2.path, root / "w2", init=run, epochs=1, lr=1e-3, quiet=True, threads=1)
    assert 0 < api.evaluate(root / "w2", s3.path).auc < 1  # the update, on the next day's grown store


def test_new_id_share_counts_list_items(list_days):
    from mutualctr.experiments.online import new_id_share

    _, (s1, s2, _), _ = list_days
    share = new_id_share(s1.path, s2.path)
    grow = {n: (s1.feature_map.field(n).vocab_size, s2.feature_map.field(n).vocab_size) for n in ("user", "item", "tags")}
    assert share["new_values"] == pytest.approx(sum(b - a for a, b in grow.values()) / sum(b - 2 for _, b in grow.values()))
    sizes = {n: a for n, (a, _) in grow.items()} | {"hist": grow["item"][0]}
    hit = rows = 0
    for name in ("train", "dev", "test"):
        arrays = s2.split(name)[0]
        old = _relaid(_relaid(arrays, s2, s1, sizes), s1, s2)  # every new id set to OOV
        changed = (np.asarray(arrays.X) != old.X).any(axis=1)
        for k in arrays.bags:
            changed |= (np.asarray(arrays.bags[k]) != old.bags[k]).any(axis=1)
        hit, rows = hit + int(changed.sum()), rows + len(changed)
    assert 0 < hit < rows and share["rows_with_new"] == pytest.approx(hit / rows)


def test_an_ancestor_run_scores_and_exports_on_the_grown_store_as_on_its_own(list_days):
    """Day 1's run on day 3's grown store (evaluate, predict, export): a value new since day 1 is
    scored with its field's OOV row, so every raw row scores exactly as on day 1's own store; the
    export takes day 3's encoder spec and its check passes."""
    import json

    from mutualctr.data.encode import encode_file
    from mutualctr.serving.export import load_scorer, score_rows

    root, (s1, s2, s3), run = list_days
    raw = root / "d3.csv"
    own, grown = encode_file(s1, raw).inputs, encode_file(s3, raw).inputs
    assert (np.asarray(grown.X) >= s1.feature_map.num_features).any()  # day 3 holds values day 1 lacks
    z_own = predict_logits(api.load_run(run, s1.path).model, own, 0, "cpu")
    z_grown = predict_logits(api.load_run(run, s3.path).model, grown, 0, "cpu")
    np.testing.assert_array_equal(z_grown, z_own)  # every row, new values included
    e = api.export(run, root / "x3", format="torchscript", data=s3.path, check=True)
    assert e.check.passed and e.num_features == s3.feature_map.num_features
    manifest = json.loads((root / "x3" / "export.json").read_text())
    assert manifest["store"]["fingerprint"] == s3.fingerprint and manifest["checkpoint"]["trained_on"] == s1.fingerprint
    spec = json.loads((root / "x3" / "encoder.json").read_text())
    assert json.dumps(spec).count('"i47"') and not json.dumps(
        json.loads((api.export(run, root / "x1", format="torchscript").out / "encoder.json").read_text())).count('"i47"')
    p = score_rows(load_scorer(root / "x3", manifest)[0], grown, inputs=manifest.get("inputs"))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z_own)), atol=1e-5)  # the artefact, on day 3's encoding
    # to train (train --init, mutual --init) the new rows start as a fresh model's, not as the OOV row
    from mutualctr.training.jobs import load_run

    f1, f3 = s1.feature_map.field("item"), s3.feature_map.field("item")
    for new_rows, same in (("oov", True), ("fresh", False)):
        table = next(v for v in load_run(run, s3, new_rows=new_rows)[0].state_dict().values()
                     if v.dim() == 2 and v.shape[0] == s3.feature_map.num_features)
        new = table[f3.offset + f1.vocab_size:f3.offset + f3.vocab_size]
        assert len(new) > 10 and bool((new == table[f3.offset]).all()) is same
