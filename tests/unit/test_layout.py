"""The SFEW folder layouts and the messages for bad ones."""

import pytest

from fer_lottery.core.classes import CLASSES
from fer_lottery.core.errors import DataError
from fer_lottery.data.layout import list_images


def _touch_images(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img_{i}.png").write_bytes(b"x")


def test_flat_layout_case_insensitive(tmp_path):
    for i, name in enumerate(CLASSES):
        _touch_images(tmp_path / (name.upper() if i % 2 else name.lower()), n=i + 1)
    items = list_images(tmp_path)
    assert len(items) == sum(range(1, 8))
    counts = [sum(1 for _, y in items if y == k) for k in range(7)]
    assert counts == list(range(1, 8))


def test_sfew2_train_val_layout_is_pooled(tmp_path):
    for split in ("Train", "Val"):
        for name in CLASSES:
            _touch_images(tmp_path / split / name, n=2)
    (tmp_path / "Test").mkdir()  # unlabelled in SFEW 2.0: ignored
    items = list_images(tmp_path)
    assert len(items) == 2 * 7 * 2
    assert {p.parent.parent.name for p, _ in items} == {"Train", "Val"}


def test_missing_root_names_path_layout_and_synthetic(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        list_images(missing)
    text = str(err.value)
    assert str(missing) in text
    assert "Angry" in text and "Train/<Class>" in text
    assert "data=synthetic" in text


def test_missing_unknown_and_empty_classes_are_listed(tmp_path):
    for name in CLASSES[:5]:
        _touch_images(tmp_path / name)
    (tmp_path / "Sad").mkdir()  # empty
    _touch_images(tmp_path / "Contempt")
    with pytest.raises(DataError) as err:
        list_images(tmp_path)
    text = str(err.value)
    assert "missing:  Surprise" in text
    assert "unknown:  Contempt" in text
    assert "empty (no image files): Sad" in text
    assert "expected: Angry, Disgust" in text
