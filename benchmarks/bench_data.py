"""The data path and face cropping against the usual torchvision and facenet-pytorch code.

``data_path``: one training epoch of batches from ``FaceDataModule`` (uint8 tensors in memory,
batched on-device augmentation: flip, rotation, square crop, normalisation) against torchvision
``ImageFolder`` + PIL + per-image transforms + ``DataLoader`` (2 persistent workers) over the same
crops written as PNG files. Only the batches are produced; no model runs.

``face_crop``: ``fer_lottery.data.faces.crop_faces`` (batched MTCNN, cold cache) against plain
facenet-pytorch MTCNN detecting one frame at a time, then cutting and resizing the best box, on
the same 720x576 frames with a real photo (scikit-image's astronaut) pasted in; a second line
with the crop cache warm. ``python -m benchmarks.bench_data``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.common import alternate, bench_device, compose, emit, quiet_lightning
from fer_lottery.core.classes import CLASSES
from fer_lottery.data.augment import IMAGENET_MEAN, IMAGENET_STD
from fer_lottery.data.datamodule import FaceDataModule
from fer_lottery.data.faces import CropParams, crop_faces


def data_path(repeats: int, image_size: int, per_class: int) -> None:
    cfg = compose(
        "data=synthetic",
        f"data.image_size={image_size}",
        f"data.synthetic.per_class={per_class}",
    )
    dm = FaceDataModule(cfg.data, None, seed=0)
    dm.setup()
    aug = cfg.data.augment
    with tempfile.TemporaryDirectory() as tmp:
        for i, (img, y) in enumerate(zip(dm.images["train"], dm.labels["train"], strict=True)):
            folder = Path(tmp) / CLASSES[int(y)]
            folder.mkdir(exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
        tf = transforms.Compose(
            [
                transforms.RandomHorizontalFlip(aug.hflip),
                transforms.RandomRotation(aug.rotation),
                transforms.RandomResizedCrop(
                    image_size, scale=(aug.crop_area_min, aug.crop_area_max), ratio=(1.0, 1.0)
                ),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        folder = datasets.ImageFolder(tmp, transform=tf)
        loader = DataLoader(
            folder,
            batch_size=cfg.data.batch_size,
            shuffle=True,
            num_workers=2,
            persistent_workers=True,
        )

        device = bench_device()  # both sides deliver training batches on the training device

        def ours() -> None:
            for x, _ in dm.train_dataloader():
                dm.transform(x.to(device, non_blocking=True), train=True)

        def baseline() -> None:
            for x, _ in loader:
                x.to(device, non_blocking=True)

        s = alternate({"ours": ours, "baseline": baseline}, repeats)
    n = len(dm.labels["train"])
    emit(
        "data_path",
        s["ours"] * 1000,
        s["baseline"] * 1000,
        "ms/epoch",
        digits=1,
        ours_img_per_s=round(n / s["ours"], 1),
        baseline_img_per_s=round(n / s["baseline"], 1),
        baseline_is="ImageFolder + PIL + torchvision transforms + DataLoader(num_workers=2)",
        images=n,
        image_size=image_size,
        batch_size=cfg.data.batch_size,
        repeats=repeats,
    )


def movie_frame(rng: np.random.Generator, size=(720, 576)) -> Image.Image:
    """A textured 720x576 frame with the astronaut photo pasted in at a random place and size."""
    from skimage import data

    background = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    frame = Image.fromarray(background).resize(size, Image.BILINEAR)
    side = int(rng.integers(300, 420))
    face = Image.fromarray(data.astronaut()).resize((side, side))
    frame.paste(face, (int(rng.integers(0, size[0] - side)), int(rng.integers(0, size[1] - side))))
    return frame


def plain_mtcnn(paths: list[Path], size: int) -> np.ndarray:
    """The baseline: facenet-pytorch MTCNN, one frame at a time, best box cut and resized."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu", post_process=False)
    crops = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        boxes, probs = mtcnn.detect(img)
        if boxes is None:
            w, h = img.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)
        else:
            box = tuple(int(v) for v in boxes[int(np.argmax(probs))])
        crops.append(np.asarray(img.crop(box).resize((size, size), Image.BILINEAR)))
    return np.stack(crops)


def face_crop(repeats: int, frames: int) -> None:
    params = CropParams(size=224)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(frames):
            path = Path(tmp) / f"frame_{i:03d}.png"
            movie_frame(rng).save(path)
            paths.append(path)
        warm_cache = Path(tmp) / "warm"
        crop_faces(paths, params, warm_cache, progress=False)
        cold = iter(range(10**6))

        def ours_cold() -> None:
            crop_faces(paths, params, Path(tmp) / f"cold{next(cold)}", progress=False)

        s = alternate(
            {
                "ours_cold": ours_cold,
                "ours_warm": lambda: crop_faces(paths, params, warm_cache, progress=False),
                "baseline": lambda: plain_mtcnn(paths, params.size),
            },
            repeats,
        )
    common = {
        "frames": frames,
        "frame_size": "720x576",
        "batch_size": params.batch_size,
        "baseline_is": "facenet-pytorch MTCNN, one frame at a time",
        "repeats": repeats,
    }
    # Both sides detect on the CPU here (the baseline's MTCNN is built with device="cpu", and
    # crop_faces is given no device): the line says so on a GPU machine too.
    emit("face_crop", s["ours_cold"], s["baseline"], "s", cache="cold", device="cpu", **common)
    emit(
        "face_crop",
        s["ours_warm"],
        s["baseline"],
        "s",
        digits=4,
        cache="warm",
        device="cpu",
        **common,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    quiet_lightning()
    data_path(args.repeats, args.image_size, args.per_class)
    face_crop(max(1, args.repeats - 3), args.frames)


if __name__ == "__main__":
    main()
