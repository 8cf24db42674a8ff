"""Built-in synthetic face-expression images in the 7 SFEW classes. NOT SFEW.

For demos, tests and offline runs. Each image is a cartoon face drawn with PIL. The classes
differ only in the shapes of the mouth, eyes and brows (plus a nose wrinkle for Disgust):

==========  ==============================  ======================  =========================
class       brows                           eyes                    mouth
==========  ==============================  ======================  =========================
Angry       slanted down toward the centre  slightly narrowed       short, tight, pressed
Disgust     lowered, level; nose wrinkles   narrowed (squint)       wavy, one side of the
                                                                    upper lip raised
Fear        raised, drawn together          wide                    wide, stretched, open
Happy       level                           slightly narrowed       upturned smile
Neutral     level                           normal                  straight
Sad         inner ends raised               normal / lids lowered   downturned
Surprise    raised high and arched          wide and round          open round "O"
==========  ==============================  ======================  =========================

Every shape is left/right symmetric except the Disgust mouth, whose mirror image is still a
Disgust mouth (the raised side is random), so horizontal-flip augmentation keeps the label.

Nuisance variation, all random per image: expression intensity, feature size and position
jitter, in-plane rotation, face scale and offset, face aspect ratio, skin colour, hair,
background (flat / gradient, plus clutter shapes), illumination gradient, blur and Gaussian
noise.

Faces are drawn in a canonical frame (face centre at the origin, face half-height 1, y down)
and every point goes through one affine map to pixels, on a canvas 2-4x the output size that
is then downsampled (antialiasing).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from fer_lottery.core.classes import CLASSES

__all__ = ["make_synthetic", "render_face"]

ANGRY, DISGUST, FEAR, HAPPY, NEUTRAL, SAD, SURPRISE = range(7)
assert CLASSES[ANGRY] == "Angry" and CLASSES[SURPRISE] == "Surprise"

_SKIN_TONES = np.array(
    [
        (255, 224, 196),
        (241, 194, 160),
        (224, 172, 130),
        (198, 134, 96),
        (160, 104, 70),
        (120, 78, 50),
        (90, 58, 40),
    ],
    dtype=np.float64,
)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


class _Pen:
    """Maps canonical face coordinates to canvas pixels and draws on the canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, cy: float, scale: float, angle: float):
        self.draw = draw
        self.cx, self.cy, self.scale = cx, cy, scale
        self.c, self.s = math.cos(angle), math.sin(angle)

    def pts(self, xy: np.ndarray) -> list[tuple[float, float]]:
        x, y = xy[:, 0], xy[:, 1]
        px = self.cx + self.scale * (self.c * x - self.s * y)
        py = self.cy + self.scale * (self.s * x + self.c * y)
        return list(zip(px.tolist(), py.tolist(), strict=True))

    def width(self, w: float) -> int:
        return max(1, round(w * self.scale))

    def polygon(self, xy: np.ndarray, fill, outline=None, width: float = 0.0) -> None:
        p = self.pts(xy)
        self.draw.polygon(p, fill=fill)
        if outline is not None and width > 0:
            self.line(xy, outline, width, closed=True)

    def line(self, xy: np.ndarray, fill, width: float, closed: bool = False) -> None:
        p = self.pts(xy)
        if closed:
            p = p + p[:1]
        w = self.width(width)
        self.draw.line(p, fill=fill, width=w)
        r = w / 2.0
        if r >= 1.5:  # round caps
            for x, y in (p[0], p[-1]):
                self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


@functools.cache
def _unit_circle(n: int) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    return _unit_circle(n) * (rx, ry) + (cx, cy)


def _curve(x0: float, x1: float, y_fn, n: int = 24) -> np.ndarray:
    x = np.linspace(x0, x1, n)
    return np.stack([x, y_fn(x)], axis=1)


def _expression(label: int, rng: np.random.Generator) -> dict[str, float]:
    """Feature parameters for one face: a neutral face moved toward the class's shapes."""
    u = rng.uniform
    p = {
        "brow_inner": -0.40,  # y of the brow end near the nose (smaller = higher)
        "brow_outer": -0.40,  # y of the brow's outer end
        "brow_arch": 0.03,  # how far the brow middle rises above the chord
        "brow_gap": 0.11,  # x of the inner brow ends
        "eye_open": 0.075,  # eye half-height
        "eye_w": 0.14,  # eye half-width
        "mouth_w": 0.26,  # mouth half-width
        "mouth_curve": 0.0,  # corner lift (positive = corners up)
        "mouth_open": 0.0,  # mouth half-height of the opening
        "mouth_wave": 0.0,  # Disgust: raised upper lip on one side
        "wrinkle": 0.0,  # Disgust: nose wrinkle strength
    }
    target: dict[str, float] = {}
    if label == ANGRY:
        target = {
            "brow_inner": -0.27,
            "brow_outer": -0.47,
            "brow_arch": -0.01,
            "brow_gap": 0.07,
            "eye_open": 0.055,
            "mouth_w": 0.17,
            "mouth_curve": -0.03,
        }
    elif label == DISGUST:
        target = {
            "brow_inner": -0.31,
            "brow_outer": -0.33,
            "brow_gap": 0.08,
            "eye_open": 0.035,
            "mouth_w": 0.24,
            "mouth_curve": -0.02,
            "mouth_open": 0.025,
            "mouth_wave": 0.10,
            "wrinkle": 1.0,
        }
    elif label == FEAR:
        target = {
            "brow_inner": -0.56,
            "brow_outer": -0.48,
            "brow_arch": 0.0,
            "brow_gap": 0.07,
            "eye_open": 0.115,
            "mouth_w": 0.36,
            "mouth_curve": -0.04,
            "mouth_open": 0.065,
        }
    elif label == HAPPY:
        target = {
            "brow_inner": -0.43,
            "brow_outer": -0.43,
            "eye_open": 0.055,
            "mouth_w": 0.32,
            "mouth_curve": 0.17,
            "mouth_open": 0.03,
        }
    elif label == SAD:
        target = {
            "brow_inner": -0.53,
            "brow_outer": -0.33,
            "brow_arch": -0.02,
            "eye_open": 0.06,
            "mouth_w": 0.24,
            "mouth_curve": -0.14,
        }
    elif label == SURPRISE:
        target = {
            "brow_inner": -0.60,
            "brow_outer": -0.58,
            "brow_arch": 0.09,
            "eye_open": 0.125,
            "eye_w": 0.125,
            "mouth_w": 0.12,
            "mouth_open": 0.15,
        }
    intensity = u(0.6, 1.0)
    for k, v in target.items():
        p[k] = _lerp(p[k], v, intensity)
    # Individual differences, independent of the class.
    p["brow_inner"] += u(-0.035, 0.035)
    p["brow_outer"] += u(-0.035, 0.035)
    p["brow_gap"] += u(-0.015, 0.02)
    p["eye_open"] *= u(0.85, 1.15)
    p["eye_w"] *= u(0.85, 1.15)
    p["mouth_w"] *= u(0.85, 1.15)
    p["mouth_curve"] += u(-0.025, 0.025)
    p["mouth_open"] = max(0.0, p["mouth_open"] * u(0.8, 1.2))
    return p


def _draw_face(pen: _Pen, label: int, rng: np.random.Generator, skin: np.ndarray) -> None:
    u = rng.uniform
    p = _expression(label, rng)
    ink = tuple(int(c) for c in np.clip(skin * u(0.15, 0.35), 0, 255))
    skin_c = tuple(int(c) for c in skin)
    shade = tuple(int(c) for c in np.clip(skin * 0.78, 0, 255))
    lip = tuple(int(c) for c in np.clip(skin * np.array([0.75, 0.45, 0.45]) + [30, 0, 0], 0, 255))
    hair = tuple(int(c) for c in rng.integers(0, 120, 3)) if u() < 0.9 else (200, 200, 200)
    aspect = u(0.68, 0.82)  # face half-width / half-height

    # Hair behind the head, ears, head, hair fringe.
    if u() < 0.85:
        pen.polygon(_ellipse(0.0, -0.12 - u(0, 0.1), aspect * u(1.08, 1.2), u(0.98, 1.1)), hair)
    for side in (-1, 1):
        pen.polygon(_ellipse(side * aspect * 0.97, 0.0, 0.1, 0.2, 20), shade)
    pen.polygon(_ellipse(0.0, 0.0, aspect, 1.0, 64), skin_c, outline=shade, width=0.02)
    if u() < 0.6:
        top = -1.0 + u(0.02, 0.2)
        fringe = _curve(-aspect * 0.9, aspect * 0.9, lambda x: top + 0.12 * (x / aspect) ** 2)
        fringe = np.concatenate(
            [fringe, [[aspect * 0.8, -0.95], [0.0, -1.08], [-aspect * 0.8, -0.95]]]
        )
        pen.polygon(fringe, hair)

    eye_y = -0.15 + u(-0.03, 0.03)
    eye_x = 0.29 * aspect / 0.75 + u(-0.02, 0.02)
    brow_w = u(0.055, 0.075)
    for side in (-1, 1):
        # Brow: quadratic from the inner to the outer end with an arch in the middle.
        x0, x1 = p["brow_gap"], p["brow_gap"] + u(0.27, 0.33)
        y0, y1, arch = p["brow_inner"], p["brow_outer"], p["brow_arch"]
        brow = _curve(
            0.0, 1.0, lambda t, y0=y0, y1=y1, arch=arch: y0 + (y1 - y0) * t - 4 * arch * t * (1 - t)
        )
        brow[:, 0] = side * (x0 + (x1 - x0) * brow[:, 0])
        brow[:, 1] += eye_y + 0.15
        pen.line(brow, ink, brow_w)
        # Eye: sclera, iris, pupil, upper lid line.
        ex, ew, eo = side * eye_x, p["eye_w"], p["eye_open"]
        pen.polygon(_ellipse(ex, eye_y, ew, eo, 32), (245, 245, 240), outline=ink, width=0.012)
        ir = min(0.055, eo * 0.95)
        pen.polygon(
            _ellipse(ex, eye_y, ir, ir, 20), tuple(int(c) for c in rng.integers(20, 110, 3))
        )
        pen.polygon(_ellipse(ex, eye_y, ir * 0.45, ir * 0.45, 12), (10, 10, 10))
        eye = _ellipse(ex, eye_y, ew, eo, 32)
        pen.line(np.concatenate([eye[16:], eye[:1]]), ink, 0.02)  # upper lid (t in pi..2pi)

    # Nose, and the Disgust wrinkles on its bridge.
    nose_y = 0.18 + u(-0.03, 0.03)
    pen.line(np.array([[0.0, eye_y + 0.05], [-0.05, nose_y], [0.05, nose_y + 0.02]]), shade, 0.02)
    if p["wrinkle"] > 0:
        for k in range(2):
            y = eye_y + 0.10 + 0.06 * k
            for side in (-1, 1):
                pen.line(np.array([[side * 0.03, y], [side * 0.12, y - 0.04]]), ink, 0.018)

    _draw_mouth(pen, p, rng, 0.50 + u(-0.04, 0.04), ink, lip)


def _draw_mouth(
    pen: _Pen, p: dict[str, float], rng: np.random.Generator, my: float, ink, lip
) -> None:
    w, curve, opening, wave = p["mouth_w"], p["mouth_curve"], p["mouth_open"], p["mouth_wave"]
    side = 1.0 if rng.uniform() < 0.5 else -1.0

    def mid(x: np.ndarray) -> np.ndarray:
        # Corners at my - curve, centre at my: a parabola; plus the one-sided Disgust snarl.
        y = my - curve * (x / w) ** 2
        if wave:
            y = y - wave * np.exp(-(((x - side * 0.45 * w) / (0.35 * w)) ** 2))
            y = y + 0.4 * wave * np.sin(np.pi * x / w * 2.0) * 0.15
        return y

    if opening > 0.012:
        n = 28
        top = _curve(-w, w, lambda x: mid(x) - opening * (1 - (x / w) ** 2) ** 0.7, n)
        bot = _curve(w, -w, lambda x: mid(x) + opening * (1 - (x / w) ** 2) ** 0.7, n)
        if wave:  # raised lip opens the mouth on one side only
            bot = _curve(w, -w, lambda x: mid(x) + 0.3 * opening * (1 - (x / w) ** 2), n)
            top = _curve(-w, w, lambda x: mid(x) - opening * (1 - (x / w) ** 2) ** 0.7, n)
        outline = np.concatenate([top, bot])
        pen.polygon(outline, (60, 15, 20), outline=lip, width=0.035)
        if opening > 0.04 and p["mouth_w"] > 0.2:  # teeth in wide open mouths
            teeth = np.concatenate(
                [top, _curve(w, -w, lambda x: mid(x) - opening * 0.2 * (1 - (x / w) ** 2), n)]
            )
            pen.polygon(teeth, (240, 240, 230))
    else:
        pen.line(_curve(-w, w, mid), lip, 0.08)
        pen.line(_curve(-w, w, mid), ink, 0.03)


def _background(rng: np.random.Generator, canvas: int) -> Image.Image:
    u = rng.uniform
    c0 = rng.uniform(0, 255, 3)
    if u() < 0.6:  # linear gradient in a random direction
        c1 = rng.uniform(0, 255, 3)
        a = u(0, 2 * math.pi)
        g = np.linspace(-1.0, 1.0, 16)
        t = (np.cos(a) * g[None, :] + np.sin(a) * g[:, None]) * 0.5 + 0.5
        arr = c0 * (1 - t[..., None]) + c1 * t[..., None]
        img = Image.fromarray(arr.astype(np.uint8)).resize((canvas, canvas), Image.BILINEAR)
    else:
        img = Image.new("RGB", (canvas, canvas), tuple(int(c) for c in c0))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(0, 4)):  # clutter
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * canvas
        x1, y1 = np.array([x0, y0]) + rng.uniform(0.05, 0.5, 2) * canvas
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=col)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=col)
        else:
            draw.line((x0, y0, x1, y1), fill=col, width=max(1, int(u(0.01, 0.04) * canvas)))
    return img


def render_face(label: int, rng: np.random.Generator, size: int) -> Image.Image:
    """One synthetic face of class ``CLASSES[label]`` as an RGB ``size`` x ``size`` image.

    All randomness comes from ``rng`` (a ``numpy.random.Generator``). Every label draws the
    same sequence of random numbers, so two generators in the same state give the same pose,
    colours, background and noise for any two labels: only the expression differs.
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in 0..{len(CLASSES) - 1}, got {label}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    u = rng.uniform
    ss = 4 if size <= 64 else (3 if size <= 96 else 2)
    canvas = size * ss
    img = _background(rng, canvas)

    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * u(0.85, 1.1) + rng.uniform(-12, 12, 3)
    skin = np.clip(skin, 0, 255)
    scale = canvas * u(0.38, 0.46)  # pixels per canonical unit (face half-height)
    cx = canvas * (0.5 + u(-0.05, 0.05))
    cy = canvas * (0.52 + u(-0.05, 0.05))
    angle = math.radians(u(-12, 12))
    _draw_face(_Pen(ImageDraw.Draw(img), cx, cy, scale, angle), label, rng, skin)

    img = img.resize((size, size), Image.BOX)
    if u() < 0.15:  # blur: down- and upsample (much cheaper than GaussianBlur)
        small = max(4, round(size / u(1.2, 1.8)))
        img = img.resize((small, small), Image.BILINEAR).resize((size, size), Image.BILINEAR)

    arr = np.asarray(img, dtype=np.float32)
    # Illumination: a random linear brightness ramp; then Gaussian noise.
    a = u(0, 2 * math.pi)
    g = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    ramp = np.float32(math.cos(a)) * g[None, :] + np.float32(math.sin(a)) * g[:, None]
    light = np.float32(u(0.75, 1.15)) + np.float32(u(0.0, 0.25)) * ramp
    arr *= light[..., None]
    noise = rng.standard_normal(arr.shape, dtype=np.float32)
    noise *= np.float32(u(2.0, 8.0))
    arr += noise
    arr += np.float32(0.5)
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8))


@functools.lru_cache(maxsize=2)
def make_synthetic(per_class: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Built-in synthetic face-expression dataset (NOT SFEW).

    Returns ``(images, labels)``: images uint8 ``[7 * per_class, 3, S, S]`` and labels int64
    ``[7 * per_class]`` indexing :data:`~fer_lottery.data.CLASSES`, exactly ``per_class`` of
    each class, interleaved (``labels[i] == i % 7``) so any prefix of ``7 * k`` images is
    balanced. Deterministic per seed: image ``i`` depends only on ``(seed, i)``. Cached, so the
    jobs of a sweep in one process draw the images once; treat the tensors as read-only.
    """
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    n_cls = len(CLASSES)
    n = n_cls * per_class
    labels = np.tile(np.arange(n_cls, dtype=np.int64), per_class)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([int(seed) % 2**64, i])
        images[i] = np.asarray(render_face(int(labels[i]), rng, image_size))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
