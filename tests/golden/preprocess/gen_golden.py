"""Golden vectors for src/infer/preprocess.rs, from the real Pillow / scipy / transformers 4.57.6."""
import os, sys
import numpy as np
import PIL, scipy, transformers
from PIL import Image
from transformers import OwlViTImageProcessor, Owlv2ImageProcessor
from transformers.image_utils import ChannelDimension

# Writes next to this file. Run with a venv holding transformers==4.57.6, pillow 13, scipy, numpy:
#   python tests/golden/preprocess/gen_golden.py
OUT = os.path.dirname(os.path.abspath(__file__))
print("pillow", PIL.__version__, "scipy", scipy.__version__, "numpy", np.__version__, "transformers", transformers.__version__)


def synth(w, h):
    """Deterministic test image; the Rust tests build the same pixels (`synth` there)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    img = np.zeros((h, w, 3), np.uint8)
    for c in range(3):
        img[..., c] = (x * 37 + y * (91 + 2 * c) + c * 53 + ((x * y) % 17) * 13) % 256
    # A 0/255 checkerboard in the lower left: bicubic overshoots there, so clipping is exercised.
    cb = (((x // 3) + (y // 2)) % 2) * 255
    mask = (x < w // 3) & (y >= h // 2)
    img[mask] = cb[mask][:, None].astype(np.uint8)
    return img


def save(name, arr):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(arr))
    print(name, arr.dtype, arr.shape)


# 1. Pillow bicubic, 8-bit RGB.
for (w, h, W, H) in [(37, 23, 16, 16), (13, 9, 29, 31), (50, 20, 20, 50), (64, 48, 64, 20), (31, 40, 12, 40), (200, 150, 24, 24), (30, 70, 16, 16), (13, 40, 20, 12)]:
    im = Image.fromarray(synth(w, h))
    save(f"pil_{w}x{h}_to_{W}x{H}", np.array(im.resize((W, H), Image.Resampling.BICUBIC)))

# 2. Owlv2ImageProcessor.resize on the rescaled (and, where square, padded) float32 image.
v2 = Owlv2ImageProcessor()
for (w, h, pad, W, H) in [(37, 23, True, 16, 16), (9, 13, True, 29, 29), (97, 60, True, 24, 24), (30, 40, False, 24, 16), (10, 7, True, 2, 2), (5, 5, True, 3, 3), (6, 4, True, 1, 1)]:
    img = v2.rescale(synth(w, h), 1 / 255, input_data_format=ChannelDimension.LAST)
    if pad:
        img = v2.pad(img, input_data_format=ChannelDimension.LAST)
    assert img.dtype == np.float32
    out = v2.resize(img, {"height": H, "width": W}, input_data_format=ChannelDimension.LAST)
    assert out.dtype == np.float32, out.dtype
    save(f"v2resize_{w}x{h}{'_pad' if pad else ''}_to_{W}x{H}", out)

# 3. Whole processors (slow ones), pixel_values [1, 3, S, S] float32.
vit = OwlViTImageProcessor(size={"height": 24, "width": 24}, crop_size={"height": 24, "width": 24}, do_center_crop=True)
for (w, h) in [(37, 23), (13, 9), (24, 24)]:
    pv = vit(images=Image.fromarray(synth(w, h)), return_tensors="np")["pixel_values"]
    assert pv.dtype == np.float32
    save(f"owlvit_24_{w}x{h}", pv[0])
v2 = Owlv2ImageProcessor(size={"height": 32, "width": 32})
for (w, h) in [(37, 23), (23, 37), (13, 9), (97, 60), (32, 32)]:
    pv = v2(images=Image.fromarray(synth(w, h)), return_tensors="np")["pixel_values"]
    assert pv.dtype == np.float32
    save(f"owlv2_32_{w}x{h}", pv[0])
