from pathlib import Path

import numpy as np
import pytest

from ecg_ray.config import load_experiment
from ecg_ray.data.prepare import class_weights, content_hash, pad_or_trim, prepare, split_records
from ecg_ray.errors import DataError
from ecg_ray.data.records import RecordSet


def test_class_weights_reproduce_the_notebook():
    labels = np.repeat(np.arange(4), [3094, 465, 1501, 192])
    np.testing.assert_allclose(class_weights(labels), [0.5310278, 0.70645161, 0.56395736, 1.0], rtol=1e-6)
    assert class_weights(labels).dtype == np.float32


def test_class_weights_refuse_a_missing_class():
    with pytest.raises(DataError, match="no records of class AF"):
        class_weights(np.array([0, 0, 2, 3]))


def test_pad_appends_zeros_at_the_end():
    out = pad_or_trim([np.arange(1, 6, dtype=float)], 8)
    np.testing.assert_array_equal(out[0], [1, 2, 3, 4, 5, 0, 0, 0])
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    "n, length, first",
    [(10, 10, 0), (11, 10, 0), (12, 10, 1), (13, 10, 1), (18300, 9000, 4650)],
)
def test_trim_keeps_the_centre(n, length, first):
    out = pad_or_trim([np.arange(n, dtype=float)], length)
    np.testing.assert_array_equal(out[0], np.arange(first, first + length))


def test_pad_or_trim_mixed_batch_and_empty():
    out = pad_or_trim([np.ones(3), np.ones(7), np.ones(5), np.zeros(0)], 5)
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(out.sum(1), [3, 5, 5, 0])


def _records(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), [n // 2, n // 5, n // 5, n - n // 2 - 2 * (n // 5)])
    return RecordSet([f"R{i}" for i in range(n)], [rng.normal(size=3000) for _ in range(n)], labels, 300, "test")


def test_split_is_stratified_seeded_and_disjoint():
    cfg = load_experiment(None).data
    a = split_records({"all": _records()}, cfg, seed=1)
    b = split_records({"all": _records()}, cfg, seed=1)
    c = split_records({"all": _records()}, cfg, seed=2)
    assert a["val"].ids == b["val"].ids and a["val"].ids != c["val"].ids
    assert not set(a["train"].ids) & set(a["val"].ids)
    assert len(a["train"]) + len(a["val"]) == 200 and len(a["val"]) == 40
    np.testing.assert_array_equal(a["val"].class_counts(), [20, 8, 8, 4])


def test_split_with_test_fraction():
    cfg = load_experiment(None, **{"data.test_fraction": 0.1}).data
    out = split_records({"all": _records()}, cfg, seed=0)
    assert [len(out[k]) for k in ("train", "val", "test")] == [140, 40, 20]


def test_val_and_test_fractions_are_shares_of_all_records_as_the_docs_say():
    """One meaning, said the same way in the reference, the guide and the code: 1000 records at val 0.2 and
    test 0.275 give val 200 (not 0.2 of the 725 left after the test split)."""
    cfg = load_experiment(None, **{"data.val_fraction": 0.2, "data.test_fraction": 0.275}).data
    out = split_records({"all": _records(1000)}, cfg, seed=0)
    assert {k: len(v) for k, v in out.items()} == {"train": 525, "val": 200, "test": 275}
    root = Path(__file__).resolve().parents[1]
    reference = (root / "docs" / "configuration.md").read_text()
    (val_row,) = [l for l in reference.splitlines() if l.startswith("| `data.val_fraction`")]
    assert "share of all records" in val_row and "left after the test split" not in val_row
    assert "`val_fraction` (0.2: the val split's share of all records)" in (root / "docs" / "guide.md").read_text()


def test_given_train_val_pair_is_kept():
    cfg = load_experiment(None).data
    pair = {"train": _records(), "val": _records(20)}
    assert split_records(pair, cfg, seed=0) is pair


def test_content_hash_changes_with_any_byte():
    x = {"train": np.zeros((2, 4), np.float32)}
    y = {"train": np.array([0, 1])}
    ids = {"train": ["a", "b"]}
    h = content_hash(x, y, ids)
    x2 = {"train": x["train"].copy()}
    x2["train"][1, 3] = 1e-7
    assert content_hash(x2, y, ids) != h
    assert content_hash(x, {"train": np.array([0, 2])}, ids) != h
    assert content_hash(x, y, {"train": ["a", "c"]}) != h
    assert content_hash(x, y, ids) == h


def test_prepare_is_cached_and_identical(tmp_path):
    cfg = load_experiment("experiments/quick.yaml", **{"data.n_records": 60, "data.cache_dir": str(tmp_path)})
    first = prepare(cfg)
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1
    second = prepare(cfg)
    assert second.data_hash == first.data_hash
    for split in first.x:
        np.testing.assert_array_equal(first.x[split], second.x[split])
    assert second.x["train"].dtype == np.float32 and second.x["train"].shape[1] == 9000
    other = prepare(load_experiment("experiments/quick.yaml", **{"data.n_records": 60, "data.cache_dir": str(tmp_path), "data.target_length": 3000}))
    assert other.data_hash != first.data_hash and len(list(tmp_path.glob("*.npz"))) == 2


def test_damaged_cache_is_rebuilt(tmp_path):
    cfg = load_experiment("experiments/quick.yaml", **{"data.n_records": 80, "data.cache_dir": str(tmp_path)})
    first = prepare(cfg)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    assert prepare(cfg).data_hash == first.data_hash


def _external_test_set(path, n=40, seed=7, prefix="EXT"):
    from ecg_ray.data.sources import write_parquet
    from ecg_ray.data.synthetic import generate

    rs = generate(n, seed=seed, difficulty="easy")
    rs.ids = [f"{prefix}{i:04d}" for i in range(n)]
    write_parquet(rs, path)
    return rs


def test_a_given_test_set_is_the_test_split_and_leaves_train_and_val_alone(tmp_path):
    given = _external_test_set(tmp_path / "test.parquet")
    base = {"data.n_records": 200, "data.cache_dir": str(tmp_path / "cache")}
    plain = prepare(load_experiment(None, **base))
    data = prepare(load_experiment(None, **base, **{"data.test_path": str(tmp_path / "test.parquet")}))
    assert data.ids["test"] == given.ids and data.y["test"].tolist() == given.labels.tolist()
    assert data.ids["train"] == plain.ids["train"] and data.ids["val"] == plain.ids["val"]
    np.testing.assert_array_equal(data.x["train"], plain.x["train"])
    assert data.x["test"].shape == (40, 9000) and data.data_hash != plain.data_hash
    _external_test_set(tmp_path / "test.parquet", seed=8)  # new content: a new cache entry, not the old arrays
    again = prepare(load_experiment(None, **base, **{"data.test_path": str(tmp_path / "test.parquet")}))
    assert again.meta.fingerprint != data.meta.fingerprint and not np.array_equal(again.x["test"], data.x["test"])


def test_a_given_test_set_that_overlaps_training_records_is_refused(tmp_path):
    from ecg_ray.errors import ConfigError

    _external_test_set(tmp_path / "test.parquet", n=40, seed=42, prefix="S0")  # the generator's own ids
    cfg = load_experiment(None, **{"data.n_records": 200, "data.test_path": str(tmp_path / "test.parquet")})
    with pytest.raises(DataError, match=r"record S00\d+ .*is in both the train/val and the test split"):
        prepare(cfg, use_cache=False)
    with pytest.raises(ConfigError, match="Use one: a given test set"):
        load_experiment(None, **{"data.test_path": str(tmp_path / "test.parquet"), "data.test_fraction": 0.1})
    with pytest.raises(ConfigError, match="is not a test set"):
        prepare(load_experiment(None, **{"data.test_path": "synthetic"}), use_cache=False)
