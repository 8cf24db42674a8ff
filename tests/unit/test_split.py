"""Stratified split: proportions per class, determinism, and split.json."""

from collections import Counter

from fer_lottery.data.split import read_split, stratified_split, write_split

SFEW_LABELS = [0] * 100 + [1] * 75 + [2] * 100 + [3] * 100 + [4] * 100 + [5] * 100 + [6] * 100


def test_split_is_stratified_and_complete():
    split = stratified_split(SFEW_LABELS, [0.7, 0.15, 0.15], seed=1)
    all_idx = split["train"] + split["val"] + split["test"]
    assert sorted(all_idx) == list(range(len(SFEW_LABELS)))  # disjoint and complete
    assert [len(split[k]) for k in ("train", "val", "test")] == [473, 101, 101]
    for name in ("val", "test"):
        per_class = Counter(SFEW_LABELS[i] for i in split[name])
        assert per_class[0] in (15, 16) and per_class[1] in (11, 12)  # 15% of 100 and of 75
        assert set(per_class) == set(range(7))


def test_split_is_deterministic_and_seed_dependent():
    a = stratified_split(SFEW_LABELS, [0.6, 0.2, 0.2], seed=1)
    b = stratified_split(SFEW_LABELS, [0.6, 0.2, 0.2], seed=1)
    c = stratified_split(SFEW_LABELS, [0.6, 0.2, 0.2], seed=2)
    assert a == b
    assert a["test"] != c["test"]
    assert [len(a[k]) for k in ("train", "val", "test")] == [405, 135, 135]


def test_tiny_classes_still_reach_every_split():
    labels = [0] * 3 + [1] * 3
    split = stratified_split(labels, [0.7, 0.15, 0.15], seed=0)
    for name in ("train", "val", "test"):
        assert Counter(labels[i] for i in split[name]) == {0: 1, 1: 1}


def test_split_json_round_trip(tmp_path):
    split = stratified_split(SFEW_LABELS[:20], [0.5, 0.25, 0.25], seed=3)
    ids = [f"Angry/{i}.png" for i in range(20)]
    write_split(tmp_path / "split.json", split, ids, split_seed=3)
    data = read_split(tmp_path / "split.json")
    assert data["test"] == [ids[i] for i in split["test"]]
    assert data["split_seed"] == 3
    assert data["counts"]["train"] == len(split["train"])
