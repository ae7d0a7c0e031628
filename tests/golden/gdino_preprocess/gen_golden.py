"""Golden vectors for src/infer/gdino/preprocess.rs and the Pillow bilinear resize, from the real Pillow 13 and
transformers 4.57.6 (GroundingDinoImageProcessor, the slow one).

Run with the venv of models/requirements-export.txt:
    /work/venv/bin/python tests/golden/gdino_preprocess/gen_golden.py [--pillow-only]
"""
import json, os, sys
import numpy as np
import PIL
from PIL import Image

OUT = os.path.dirname(os.path.abspath(__file__))
print("pillow", PIL.__version__, "numpy", np.__version__)


def synth(w, h):
    """The synthetic image of tests/golden/preprocess/gen_golden.py (the Rust tests build the same pixels)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    img = np.zeros((h, w, 3), np.uint8)
    for c in range(3):
        img[..., c] = (x * 37 + y * (91 + 2 * c) + c * 53 + ((x * y) % 17) * 13) % 256
    cb = (((x // 3) + (y // 2)) % 2) * 255
    mask = (x < w // 3) & (y >= h // 2)
    img[mask] = cb[mask][:, None].astype(np.uint8)
    return img


def save(name, arr):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(arr))
    print(name, arr.dtype, arr.shape)


# 1. Pillow bilinear, 8-bit RGB: downscales (Pillow widens the kernel by the scale), upscales, mixed, and a tall
#    image whose height shrinks by more than twice the width (Pillow 13 runs the vertical pass first).
BILINEAR = [(37, 23, 16, 16), (13, 9, 29, 31), (50, 20, 20, 50), (64, 48, 64, 20), (31, 40, 12, 40),
            (200, 150, 24, 24), (30, 70, 16, 16), (13, 40, 20, 12), (97, 60, 80, 49), (120, 90, 33, 25)]
for (w, h, W, H) in BILINEAR:
    im = Image.fromarray(synth(w, h))
    save(f"bilinear_{w}x{h}_to_{W}x{H}", np.array(im.resize((W, H), Image.Resampling.BILINEAR)))

if "--pillow-only" in sys.argv:
    sys.exit(0)

# 2. The whole GroundingDinoImageProcessor: pixel_values [B, 3, H, W] float32 and pixel_mask [B, H, W] int64.
import transformers
from transformers import GroundingDinoImageProcessor
print("transformers", transformers.__version__)
cases = []
# (name, processor kwargs, list of (w, h) images in one batch)
CASES = [
    # The tiny models' form: letterbox into a fixed size.
    ("fixed32", dict(size={"max_height": 32, "max_width": 32}, pad_size={"height": 32, "width": 32}), [(37, 23)]),
    ("fixed32_tall", dict(size={"max_height": 32, "max_width": 32}, pad_size={"height": 32, "width": 32}), [(23, 37)]),
    # int(49 * (32 / 49)) is 31, not 32: transformers truncates the limiting side too (no special case).
    ("fixed32_trunc", dict(size={"max_height": 32, "max_width": 32}, pad_size={"height": 32, "width": 32}), [(49, 5)]),
    ("fixed24x40", dict(size={"max_height": 24, "max_width": 40}, pad_size={"height": 24, "width": 40}), [(97, 60), (13, 9)]),
    # The published checkpoints' form: shortest edge, longest at most; a batch pads to its largest.
    ("edge20_max33", dict(size={"shortest_edge": 20, "longest_edge": 33}), [(37, 23), (23, 37), (60, 10)]),
    ("edge16_max1333", dict(size={"shortest_edge": 16, "longest_edge": 1333}), [(16, 30), (200, 150)]),
]
for name, kwargs, sizes in CASES:
    proc = GroundingDinoImageProcessor(**kwargs)
    out = proc(images=[Image.fromarray(synth(w, h)) for (w, h) in sizes], return_tensors="np")
    pv, pm = out["pixel_values"], out["pixel_mask"]
    assert pv.dtype == np.float32, pv.dtype
    save(f"proc_{name}_pixel_values", pv)
    save(f"proc_{name}_pixel_mask", pm.astype(np.int64))
    cases.append({"name": name, "kwargs": kwargs, "sizes": sizes})
with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
