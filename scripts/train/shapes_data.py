"""Procedural data set of the embedded demo model: 64x64 RGB scenes with one
shape and a caption, e.g. "a small red triangle in the top left on a black
background".

Everything is drawn from a seed (numpy Generator + PIL, 4x supersampled), so
the data set, and thus the training, is reproducible. The vocabulary is kept
small so that a tiny model learns it on a 2-core CPU in under an hour:

- shape: circle, square, triangle, star               (4)
- colour: red, green, blue, yellow, white             (5)
- size: small, large                                  (2)
- position: a 3x3 grid                                (9)
- background: black, gray, white, blue (never the shape's colour)  (4)

Within one caption the image still varies (position jitter, radius, colour
shade, and with rotate=True the shape's orientation), so that sample
diversity can be measured. The LDM is trained on upright shapes (rotate=False:
a first run on randomly rotated shapes drew blobs after its 40-minute budget);
the VAE, the guidance classifier and the evaluator see rotated ones too.
"""
import math

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SS = 4  # supersampling factor

SHAPES = ["circle", "square", "triangle", "star"]
COLOURS = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.12, 0.75, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "white": (0.95, 0.95, 0.95),
}
BACKGROUNDS = {
    "black": (0.06, 0.06, 0.06),
    "gray": (0.50, 0.50, 0.50),
    "white": (0.95, 0.95, 0.95),
    "blue": (0.15, 0.30, 0.95),
}
SIZES = ["small", "large"]
# radius (of the circumscribed circle) ranges in pixels
RADIUS = {"small": (6.5, 8.0), "large": (11.0, 12.5)}
ROWS = ["top", "middle", "bottom"]
COLS = ["left", "center", "right"]
CENTRES = [12.0, 32.0, 52.0]
JITTER = 2.5
SHADE = 0.06  # per-channel colour jitter


def position_words(row, col):
    if row == 1 and col == 1:
        return "center"
    if row == 1:
        return f"middle {COLS[col]}"
    if col == 1:
        return f"{ROWS[row]} center"
    return f"{ROWS[row]} {COLS[col]}"


POSITIONS = [position_words(r, c) for r in range(3) for c in range(3)]


def caption(attrs):
    return (f"a {attrs['size']} {attrs['colour']} {attrs['shape']} in the "
            f"{POSITIONS[attrs['pos']]} on a {attrs['background']} background")


def sample_attrs(rng):
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    bgs = [b for b in BACKGROUNDS if b != colour]
    return dict(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=colour,
        size=SIZES[rng.integers(len(SIZES))],
        pos=int(rng.integers(9)),
        background=bgs[rng.integers(len(bgs))],
    )


def _polygon(shape, cx, cy, r, angle):
    if shape == "square":
        k, radii = 4, [r * 0.92]
    elif shape == "triangle":
        k, radii = 3, [r * 1.05]
    else:  # star: 5 points, inner radius 0.45 r
        k, radii = 5, [r * 1.1, r * 0.47]
    n = k * len(radii)
    pts = []
    for i in range(n):
        a = angle + 2 * math.pi * i / n - math.pi / 2
        rr = radii[i % len(radii)]
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


# upright orientation of each shape (rotate=False): triangle and star point up,
# the square is axis-aligned
UPRIGHT = {"circle": 0.0, "square": math.pi / 4, "triangle": 0.0, "star": 0.0}


def render(attrs, rng, rotate=True):
    """Float32 [64, 64, 3] in [0, 1]; rng draws the within-caption variation."""
    row, col = divmod(attrs["pos"], 3)
    cx = CENTRES[col] + rng.uniform(-JITTER, JITTER)
    cy = CENTRES[row] + rng.uniform(-JITTER, JITTER)
    r = rng.uniform(*RADIUS[attrs["size"]])
    angle = rng.uniform(0, 2 * math.pi) if rotate else UPRIGHT[attrs["shape"]]
    fg = np.clip(np.array(COLOURS[attrs["colour"]]) + rng.uniform(-SHADE, SHADE, 3), 0, 1)
    bg = np.clip(np.array(BACKGROUNDS[attrs["background"]]) + rng.uniform(-SHADE, SHADE, 3), 0, 1)
    big = SIZE * SS
    mask = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(mask)
    s = SS
    if attrs["shape"] == "circle":
        d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
    else:
        d.polygon([(x * s, y * s) for x, y in _polygon(attrs["shape"], cx, cy, r, angle)], fill=255)
    m = np.asarray(mask.resize((SIZE, SIZE), Image.BOX), dtype=np.float32)[..., None] / 255.0
    return (bg * (1 - m) + fg * m).astype(np.float32)


def make_dataset(n, seed, rotate=True):
    """n images (uint8 [n, 64, 64, 3]), captions and attribute label arrays."""
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    caps, labels = [], np.empty((n, 5), dtype=np.int64)
    for i in range(n):
        a = sample_attrs(rng)
        imgs[i] = np.round(render(a, rng, rotate) * 255).astype(np.uint8)
        caps.append(caption(a))
        labels[i] = [SHAPES.index(a["shape"]), list(COLOURS).index(a["colour"]),
                     SIZES.index(a["size"]), a["pos"], list(BACKGROUNDS).index(a["background"])]
    return imgs, caps, labels


def parse_caption(text):
    """Attributes of a caption made by `caption` (inverse)."""
    words = text.split()
    # a {size} {colour} {shape} in the {pos...} on a {bg} background
    size, colour, shape = words[1], words[2], words[3]
    on = words.index("on")
    pos = " ".join(words[6:on])
    bg = words[on + 2]
    return dict(shape=shape, colour=colour, size=size, pos=POSITIONS.index(pos), background=bg)


if __name__ == "__main__":
    import sys
    imgs, caps, _ = make_dataset(16, 0)
    grid = imgs.reshape(4, 4, SIZE, SIZE, 3).transpose(0, 2, 1, 3, 4).reshape(4 * SIZE, 4 * SIZE, 3)
    Image.fromarray(grid).resize((512, 512), Image.NEAREST).save(sys.argv[1] if len(sys.argv) > 1 else "/tmp/shapes.png")
    print("\n".join(caps))
