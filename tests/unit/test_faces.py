"""Face cropping with the real MTCNN on frames built from skimage's astronaut photo."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fer_lottery.core.errors import DataError
from fer_lottery.data import faces
from fer_lottery.data.faces import CropParams, crop_faces, read_manual_crops

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("facenet_pytorch")

# The astronaut's face in the 512x512 original lies around x 160-260, y 50-180.
FACE = (160, 50, 260, 180)
ASTRO_AT = (150, 40)  # where the astronaut is pasted into a 720x576 frame
BIG_SCALE, BIG_AT = 4, (1200, 800)  # astronaut x4 pasted into a 4000x3000 frame
MANUAL_BOX = (100, 50, 300, 250)


def _frame(w=720, h=576, colour=(90, 110, 130)):
    return Image.new("RGB", (w, h), colour)


def _astro():
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """root/<Class>/*.png with face, two-face, no-face, grey, RGBA, huge and broken frames."""
    root = tmp_path_factory.mktemp("sfew")
    for c in ("Angry", "Happy", "Sad"):
        (root / c).mkdir()
    files = {}

    def save(name, img):
        files[name] = root / name
        img.save(files[name])

    astro = _frame()
    astro.paste(_astro(), ASTRO_AT)
    save("Angry/astro.png", astro)
    two = _frame()
    small = _astro().resize((340, 340))
    two.paste(small, (10, 120))
    two.paste(small, (370, 120))
    save("Angry/two.png", two)
    noise = np.random.default_rng(0).integers(0, 256, (576, 720, 3), dtype=np.uint8)
    save("Happy/noise.png", Image.fromarray(noise))
    save("Happy/flat.png", _frame(colour=(128, 128, 128)))  # gets a manual box
    save("Happy/grey.png", astro.convert("L"))
    rgba = astro.convert("RGBA")
    rgba.putalpha(200)
    save("Sad/rgba.png", rgba)
    big = _frame(4000, 3000)
    big.paste(_astro().resize((512 * BIG_SCALE, 512 * BIG_SCALE)), BIG_AT)
    save("Sad/big.jpg", big)
    full = (root / "Angry/astro.png").read_bytes()
    files["Sad/truncated.png"] = root / "Sad/truncated.png"
    files["Sad/truncated.png"].write_bytes(full[: len(full) // 2])
    files["Sad/empty.png"] = root / "Sad/empty.png"
    files["Sad/empty.png"].write_bytes(b"")
    files["Sad/text.png"] = root / "Sad/text.png"
    files["Sad/text.png"].write_text("not an image\n")
    (root / "crops.csv").write_text(
        "file,x1,y1,x2,y2\nHappy/flat.png,{},{},{},{}\n".format(*MANUAL_BOX)
    )
    return root, files


@pytest.fixture(scope="module")
def first(dataset, tmp_path_factory):
    """One cold run over every file, with the manual crops file."""
    root, files = dataset
    names = list(files)
    paths = [files[n] for n in names]
    manual = read_manual_crops(root / "crops.csv", root)
    cache = tmp_path_factory.mktemp("cache")
    out = crop_faces(paths, CropParams(size=112), cache, manual=manual, root=root, progress=False)
    return names, paths, manual, cache, out


def _by_name(first):
    """{name: (crop, source)} for the kept images of the cold run (sources from its cache)."""
    names, paths, manual, cache, (crops, kept, _) = first
    root = paths[0].parents[1]
    params = CropParams(size=112)
    got = {}
    for j, i in enumerate(kept):
        source = _cached_source(cache, paths[i], params, faces._manual_box(paths[i], manual, root))
        got[names[i]] = (crops[j], source)
    return got


def _cached_entry(cache, data, params, manual_box=None):
    """The cache entry for these image bytes and parameters."""
    return np.load(cache / f"{faces._cache_key(data, params, manual_box)}.npz")


def _cached_box(cache, data, params, manual_box=None):
    """The crop box stored as metadata in the cache entry for these image bytes."""
    entry = _cached_entry(cache, data, params, manual_box)
    return tuple(int(v) for v in entry["box"]), float(entry["prob"])


def _cached_source(cache, path, params, manual_box=None):
    """Where the cached crop of this image came from: detected, fallback or manual."""
    return str(_cached_entry(cache, path.read_bytes(), params, manual_box)["source"])


def _inside(box, face, offset=(0, 0), scale=1):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    fx1, fy1, fx2, fy2 = (v * scale + offset[k % 2] for k, v in enumerate(face))
    return fx1 <= cx <= fx2 and fy1 <= cy <= fy2


def test_mtcnn_finds_the_astronaut_face(first):
    names, paths, _, cache, (crops, _, report) = first
    got = _by_name(first)
    for name in ("Angry/astro.png", "Happy/grey.png", "Sad/rgba.png", "Sad/big.jpg"):
        crop, source = got[name]
        assert source == "detected", name
        assert crop.shape == (3, 112, 112) and crop.dtype == torch.uint8
    assert crops.shape[1:] == (3, 112, 112)

    data = (paths[names.index("Angry/astro.png")]).read_bytes()
    box, prob = _cached_box(cache, data, CropParams(size=112))
    assert prob > 0.99
    assert box[2] - box[0] == box[3] - box[1]  # square
    assert 60 <= box[2] - box[0] <= 200
    assert _inside(box, FACE, ASTRO_AT)

    # 4000x3000: detection ran on a downscaled copy; the box is back in full-resolution pixels
    data = paths[names.index("Sad/big.jpg")].read_bytes()
    box, _ = _cached_box(cache, data, CropParams(size=112))
    assert 60 * BIG_SCALE <= box[2] - box[0] <= 200 * BIG_SCALE
    assert _inside(box, FACE, BIG_AT, BIG_SCALE)


def test_several_faces_keep_one_and_are_counted(first):
    report = first[4][2]
    assert _by_name(first)["Angry/two.png"][1] == "detected"
    assert report.multiple_faces >= 1


def test_no_face_uses_centre_fallback(first, dataset):
    _, files = dataset
    report = first[4][2]
    crop, source = _by_name(first)["Happy/noise.png"]
    assert source == "fallback"
    assert report.fallback == 1
    expected = Image.open(files["Happy/noise.png"]).crop((72, 0, 648, 576))
    expected = np.asarray(expected.resize((112, 112), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(crop.numpy(), expected)


def test_manual_box_overrides(first, dataset):
    _, files = dataset
    report = first[4][2]
    crop, source = _by_name(first)["Happy/flat.png"]
    assert source == "manual"
    assert report.manual == 1
    assert report.detected == 5 and report.cache_misses == 7 and report.cache_hits == 0
    assert crop.float().std() == 0  # the flat frame, cropped inside the frame: no zero padding


def test_unreadable_files_are_skipped_and_named(first):
    names, paths, _, _, (crops, kept, report) = first
    bad = {"Sad/truncated.png", "Sad/empty.png", "Sad/text.png"}
    assert sorted(report.unreadable) == sorted(str(paths[names.index(n)]) for n in bad)
    assert {names[i] for i in kept} == set(names) - bad
    assert len(crops) == len(kept) == 7


def test_second_run_is_a_full_cache_hit_without_mtcnn(first, caplog, monkeypatch):
    import facenet_pytorch

    names, paths, manual, cache, (crops, kept, report1) = first
    root = paths[0].parents[1]

    def refuse(*args, **kwargs):
        raise AssertionError("MTCNN must not be built when every crop is cached")

    monkeypatch.setattr(facenet_pytorch, "MTCNN", refuse)
    with caplog.at_level(logging.INFO, logger="fer_lottery.data.faces"):
        crops2, kept2, report = crop_faces(
            paths, CropParams(size=112), cache, manual=manual, root=root, progress=False
        )
    assert report.cache_hits == 7 and report.cache_misses == 0
    assert torch.equal(crops, crops2) and kept == kept2
    counts = (report.detected, report.fallback, report.manual, report.multiple_faces)
    assert counts == (report1.detected, report1.fallback, report1.manual, report1.multiple_faces)
    assert (report.detected, report.fallback, report.manual) == (5, 1, 1)
    assert len(report.unreadable) == 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for n in ("truncated.png", "empty.png", "text.png"):
        assert any(n in m for m in warned), n
    assert any("no face detection needed" in r.getMessage() for r in caplog.records)


def test_changed_parameter_misses_the_cache(first):
    names, paths, _, cache, _ = first
    subset = [paths[names.index("Angry/astro.png")], paths[names.index("Happy/noise.png")]]
    params = CropParams(size=112, margin=0.2)
    _, _, report = crop_faces(subset, params, cache, progress=False)
    assert (report.cache_hits, report.cache_misses) == (0, 2)
    assert [_cached_source(cache, p, params) for p in subset] == ["detected", "fallback"]
    _, _, report = crop_faces(subset, CropParams(size=64), cache, progress=False)
    assert (report.cache_hits, report.cache_misses) == (0, 2)
    # batch_size does not change the output, so it is not part of the key
    _, _, report = crop_faces(subset, CropParams(size=112, batch_size=1), cache, progress=False)
    assert (report.cache_hits, report.cache_misses) == (2, 0)


def test_corrupted_cache_file_is_moved_aside_and_recomputed(first, caplog):
    names, paths, _, cache, (crops, kept, _) = first
    path = paths[names.index("Happy/noise.png")]  # fallback: no MTCNN needed to recompute
    entry = cache / f"{faces._cache_key(path.read_bytes(), CropParams(size=112), None)}.npz"
    entry.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again, _, report = crop_faces([path], CropParams(size=112), cache, progress=False)
    assert (report.cache_hits, report.cache_misses) == (0, 1)
    assert report.fallback == 1
    assert torch.equal(again[0], crops[kept.index(names.index("Happy/noise.png"))])
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and str(entry) in warned[0] and "quarantine" in warned[0]
    (moved,) = (cache / "quarantine").glob(f"{entry.name}.*")
    assert moved.read_bytes() == b"garbage"  # kept for a look, out of the cache's way
    _, _, report = crop_faces([path], CropParams(size=112), cache, progress=False)
    assert report.cache_hits == 1  # rewritten


@pytest.mark.parametrize("damage", ["truncate", "wrong_size", "missing_key"])
def test_a_damaged_crop_entry_warns_once_and_is_redone(tmp_path, caplog, damage):
    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), np.uint8)).save(path)
    params = CropParams(method="none", size=32)
    first, _, _ = crop_faces([path], params, tmp_path / "c", progress=False)
    (entry,) = (tmp_path / "c").glob("*.npz")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:300])
    else:
        z = dict(np.load(entry))
        if damage == "wrong_size":
            z["crop"] = z["crop"][:, :16, :16]
        else:
            del z["n_faces"]
        with entry.open("wb") as f:
            np.savez(f, **z)
    with caplog.at_level(logging.WARNING):
        again, _, report = crop_faces([path], params, tmp_path / "c", progress=False)
    assert report.cache_misses == 1 and torch.equal(again, first)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and str(entry) in warned[0], warned
    assert len(list((tmp_path / "c" / "quarantine").iterdir())) == 1
    _, _, report = crop_faces([path], params, tmp_path / "c", progress=False)
    assert report.cache_hits == 1


def test_tiny_frames_fall_back(tmp_path):
    paths = []
    for w, h in ((40, 30), (10, 10)):  # MTCNN raises on the 10x10 one
        paths.append(tmp_path / f"tiny{w}.png")
        Image.new("RGB", (w, h), (200, 50, 50)).save(paths[-1])
    crops, kept, report = crop_faces(paths, CropParams(size=32), tmp_path / "cache", progress=False)
    assert kept == [0, 1] and report.fallback == 2
    assert crops.shape == (2, 3, 32, 32)
    # The clear "no face" on 40x30 is cached; MTCNN's error on 10x10 is not an outcome.
    assert report.detect_failed == 1
    again, _, report = crop_faces(paths, CropParams(size=32), tmp_path / "cache", progress=False)
    assert (report.cache_hits, report.cache_misses, report.detect_failed) == (1, 1, 1)
    assert torch.equal(again, crops)


def test_a_transient_mtcnn_failure_is_not_cached(dataset, tmp_path, monkeypatch, caplog):
    """A detector error (say, a GPU out of memory) gives a fallback crop now, and the next run
    detects the face: only real outcomes are cached."""
    import facenet_pytorch

    _, files = dataset
    path = files["Angry/astro.png"]
    real_detect = facenet_pytorch.MTCNN.detect

    def fail(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected)")

    monkeypatch.setattr(facenet_pytorch.MTCNN, "detect", fail)
    with caplog.at_level(logging.WARNING):
        _, _, report = crop_faces([path], CropParams(size=64), tmp_path, progress=False)
    assert report.fallback == 1 and report.detect_failed == 1
    assert any("not cached" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob("*.npz"))

    monkeypatch.setattr(facenet_pytorch.MTCNN, "detect", real_detect)
    _, _, report = crop_faces([path], CropParams(size=64), tmp_path, progress=False)
    assert report.detected == 1 and (report.cache_misses, report.detect_failed) == (1, 0)
    _, _, report = crop_faces([path], CropParams(size=64), tmp_path, progress=False)
    assert report.detected == 1 and report.cache_hits == 1


def test_method_none_and_full_fallback(tmp_path):
    path = tmp_path / "wide.png"
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 40))  # left half white
    img.save(path)
    params = CropParams(method="none", size=20, fallback="full")
    crops, _, report = crop_faces([path], params, tmp_path / "c", progress=False)
    # Not cropped, rather than "no face found": no detection was tried. The same from the cache.
    assert (report.uncropped, report.fallback, report.detected) == (1, 0, 0)
    assert crops[0, :, :, :8].min() == 255 and crops[0, :, :, 12:].max() == 0  # squashed
    _, _, again = crop_faces([path], params, tmp_path / "c", progress=False)
    assert again.cache_hits == 1 and (again.uncropped, again.fallback) == (1, 0)


def test_box_is_squared_shifted_and_padded():
    assert faces._square_box((10, 10, 30, 50), 100, 100, 0.0) == (0, 10, 40, 50)  # shifted in
    assert faces._square_box((40, 40, 60, 60), 100, 100, 0.5) == (30, 30, 70, 70)  # margin
    # larger than a 100x60 frame vertically: centred on the frame, padded with zeros there
    assert faces._square_box((20, 0, 100, 60), 100, 60, 0.0) == (20, -10, 100, 70)


def test_manual_crops_keys_and_basename_match(tmp_path):
    root = tmp_path / "root"
    (root / "Angry").mkdir(parents=True)
    csv = tmp_path / "crops.csv"
    csv.write_text(
        "file,x1,y1,x2,y2\n"
        f"{root / 'Angry' / 'a.png'},0,0,10,10\n"
        "Angry\\b.png,1,2,11,12\n"
        "./Angry/c.png,1.0,2,11,12\n"
        "d.png,3,3,13,13\n"
    )
    crops = read_manual_crops(csv, root)
    assert set(crops) == {"Angry/a.png", "Angry/b.png", "Angry/c.png", "d.png"}
    assert faces._manual_box(root / "Angry/b.png", crops, root) == (1, 2, 11, 12)
    assert faces._manual_box(root / "Sad/d.png", crops, root) == (3, 3, 13, 13)
    assert faces._manual_box(root / "Sad/b.png", crops, root) is None


@pytest.mark.parametrize(
    "row, problem",
    [
        ("x.png,1,2,3", "5 fields"),
        ("x.png,a,2,3,4", "numbers"),
        ("x.png,5,2,3,4", "x1 < x2"),
        (",1,2,3,4", "empty file name"),
        ("../x.png,1,2,3,4", "inside the data root"),
    ],
)
def test_manual_crops_bad_row_names_the_line(tmp_path, row, problem):
    csv = tmp_path / "crops.csv"
    csv.write_text(f"file,x1,y1,x2,y2\nok.png,0,0,5,5\n{row}\n")
    with pytest.raises(DataError, match=rf"crops\.csv:3: .*{problem}"):
        read_manual_crops(csv, tmp_path)


def test_manual_crops_with_several_bad_rows_name_every_one(tmp_path):
    csv = tmp_path / "crops.csv"
    rows = ["ok.png,0,0,5,5", "a.png,1,2,3", "b.png,x,0,5,5", "ok2.png,0,0,5,5", "c.png,5,5,1,1"]
    csv.write_text("file,x1,y1,x2,y2\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        read_manual_crops(csv, tmp_path)
    lines = str(err.value).splitlines()
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in lines[:3]] == ["3", "4", "6"]
    assert "expected 5 fields" in lines[0] and "numbers" in lines[1] and "x1 < x2" in lines[2]
    assert lines[3] == f"3 bad row(s) in {csv}; fix or delete each"


def test_manual_crops_bad_header(tmp_path):
    csv = tmp_path / "crops.csv"
    csv.write_text("path,x,y,w,h\n")
    with pytest.raises(DataError, match=r"crops\.csv:1: header"):
        read_manual_crops(csv, tmp_path)


def test_truncated_file_rejected_even_if_pil_is_told_to_accept_it(dataset, tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # e.g. set by another library
    path = dataset[1]["Sad/truncated.png"]
    crops, kept, report = crop_faces([path], CropParams(), tmp_path, progress=False)
    assert kept == [] and crops.shape == (0, 3, 224, 224) and report.unreadable == [str(path)]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_a_crops_csv_row_naming_no_image_is_an_error_naming_the_row(dataset, tmp_path):
    root, files = dataset
    csv = tmp_path / "crops.csv"
    csv.write_text(
        "file,x1,y1,x2,y2\n"
        "Happy/flat.png,0,0,50,50\n"  # by path: exists
        "astro.png,0,0,50,50\n"  # by bare name: exists
        "Happy/flta.png,0,0,50,50\n"  # a typo
        "gone.png,0,0,50,50\n"
    )
    manual = read_manual_crops(csv, root)
    paths = [files["Happy/flat.png"], files["Angry/astro.png"]]
    with pytest.raises(DataError) as err:
        crop_faces(paths, CropParams(method="none"), tmp_path / "c", manual, root, progress=False)
    message = str(err.value)
    assert f"{csv}:4: 'Happy/flta.png'" in message and f"{csv}:5: 'gone.png'" in message
    assert "flat.png'" not in message and ":3:" not in message
    assert "2 manual crop row(s)" in message and "delete the row" in message
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())  # before work
    # The rows that match are used.
    ok = {k: v for k, v in manual.items() if k in ("Happy/flat.png", "astro.png")}
    _, kept, report = crop_faces(
        paths, CropParams(size=32), tmp_path / "c", ok, root, progress=False
    )
    assert kept == [0, 1] and report.manual == 2


# -- unusual image modes: real files written by PIL (and one by hand), decoded to 8-bit RGB


def _png16_rgb(path, rgb):
    """Write a 16-bit RGB PNG by hand (PIL cannot write one): uint16 array [h, w, 3]."""
    import struct
    import zlib

    h, w, _ = rgb.shape

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


GREY16 = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # -> 0, 1, 128, 255


@pytest.mark.parametrize("kind", ["png_I;16", "tiff_I", "tiff_F", "png16_rgb"])
def test_deep_frames_are_scaled_to_8_bits_not_clipped(tmp_path, kind):
    path = tmp_path / ("a.tif" if kind.startswith("tiff") else "a.png")
    if kind == "png_I;16":
        Image.fromarray(GREY16).save(path)
        assert Image.open(path).mode == "I;16"
    elif kind == "tiff_I":
        Image.fromarray(GREY16.astype(np.int32)).save(path)  # mode I, as older PIL reads PNGs
        assert Image.open(path).mode == "I"
    elif kind == "tiff_F":
        Image.fromarray(GREY16.astype(np.float32) / 65535).save(path)  # 0..1 floats
        assert Image.open(path).mode == "F"
    else:
        _png16_rgb(path, np.stack([GREY16, GREY16[:, ::-1], GREY16], axis=-1))
    rgb = np.asarray(faces._decode(path.read_bytes()))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    if kind == "png16_rgb":
        assert rgb[0, :, 1].tolist() == [255, 128, 1, 0]


def test_other_modes_decode_to_their_colours_without_warnings(tmp_path, recwarn):
    grey = np.array([[0, 100, 200, 255]], dtype=np.uint8)
    la = Image.fromarray(np.stack([grey, 255 - grey], axis=-1), "LA")
    one = Image.fromarray(grey > 128)  # mode 1
    pal = Image.new("P", (4, 1))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    pal.putdata([0, 1, 2, 3])
    pal.info["transparency"] = bytes([0, 128, 255, 255])  # per-colour alpha
    cmyk = Image.new("CMYK", (4, 1), (255, 0, 0, 0))  # pure cyan
    expected = {
        "la.png": (la, np.stack([grey] * 3, axis=-1)[0]),
        "one.png": (one, np.array([[0] * 3, [0] * 3, [255] * 3, [255] * 3])),
        "pal.png": (pal, np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]])),
        "cmyk.tif": (cmyk, np.array([[0, 255, 255]] * 4)),
    }
    for name, (img, want) in expected.items():
        img.save(
            tmp_path / name, **({"transparency": img.info["transparency"]} if img is pal else {})
        )
        rgb = np.asarray(faces._decode((tmp_path / name).read_bytes()))
        assert rgb.shape == (1, 4, 3) and rgb.tolist() == [want.tolist()], name
    assert not [w for w in recwarn if "Palette" in str(w.message)]


def test_a_16_bit_frame_gets_its_face_detected(tmp_path):
    """A 16-bit grey frame is a face, not an almost white frame that counts as "no face"."""
    frame = _frame()
    frame.paste(_astro(), ASTRO_AT)
    grey16 = np.asarray(frame.convert("L"), dtype=np.uint16) * 257
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path)
    crops, _, report = crop_faces([path], CropParams(size=64), tmp_path / "c", progress=False)
    assert report.detected == 1
    assert 40 < crops.float().mean() < 200  # not white
