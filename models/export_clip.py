"""CLIP for lookout's re-ranking and cheap verifier (issue 13): used by `models/export_verifier.py --clip`; see its
docstring.

Tiny mode builds a seeded random-weight `CLIPModel` from a `CLIPConfig` (the openai/clip-vit-base-patch32
architecture at a tiny width); `--from-pretrained` loads real weights from the Hub instead (on a machine with
network). Either way the two graphs are exported at opset 17 and checked against PyTorch with ONNX Runtime, and
with `--golden` the goldens on real frames of bikes.mp4 and on the golden photos are written.

Graphs (text once per prompt set, images once per crop):
  onnx/text_encoder.onnx   input_ids, attention_mask int64 [P, 77] -> text_embeds float [P, D]
                           (CLIPModel.get_text_features: projected, not normalised)
  onnx/image_encoder.onnx  pixel_values float [N, 3, S, S] -> image_embeds float [N, D]
                           (CLIPModel.get_image_features: projected, not normalised),
                           logit_scale float [N] (CLIPModel.logit_scale.exp(), repeated per image)
lookout computes logits_per_image = logit_scale * normalise(image_embeds) @ normalise(text_embeds).T, as
CLIPModel.forward does.

In tiny mode it also writes the same model in the Hub's layout (Xenova/clip-vit-base-patch32's two graphs), next
to it as `<out>-hub` (models/tiny/clip-hub), for the tests of that layout:
  onnx/text_model.onnx     input_ids int64 [P, L] -> text_embeds [P, D]   (no attention_mask, as the Hub's)
  onnx/vision_model.onnx   pixel_values [N, 3, S, S] -> image_embeds [N, D]   (no logit_scale, as the Hub's)
"""

import json
from pathlib import Path

import numpy as np

from export_xclip import (
    OPSET, REPO, TOKENIZER_FROM, CONTEXT, decode_frames, log, max_diff, onnx_export, ort_session, save_npy,
    spread, versions,
)

# ORT against PyTorch, in logits (the export probe measured 2e-5 or better).
TOL = 2e-5
IMAGE_SIZE = 32
PATCH_SIZE = 8
# The frames of bikes.mp4 the goldens use: the X-CLIP golden event's (8 frames spread over 2 s from frame 100),
# which the verifier golden averages over, as watch does.
EVENT_START = 100
EVENT_FRAMES = 50
NUM_FRAMES = 8
PHOTOS = ["coffee.png", "astronaut.png", "grace_hopper.jpg"]
PROMPTS = [
    "a person riding a bicycle",
    "people walking past each other",
    "a person standing still",
    "an empty street with nothing happening",
    "a cup of coffee",
]


def tiny_config(tok):
    from transformers import CLIPConfig

    vocab = len(tok)
    assert tok.eos_token_id == vocab - 1, "CLIP pools at the argmax id: end-of-text must be the largest id"
    text = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=tok.model_max_length, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def image_processor(size: int):
    from transformers import CLIPImageProcessor

    # openai/clip-vit-base-patch32's processor at the tiny size: shortest edge (Pillow bicubic), centre crop,
    # CLIP mean and std (CLIPImageProcessor's defaults).
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3)


def wrappers(model):
    import torch

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m.get_text_features(input_ids=input_ids, attention_mask=attention_mask)

    class Image(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            embeds = self.m.get_image_features(pixel_values=pixel_values)
            scale = self.m.logit_scale.exp().reshape(1).expand(pixel_values.shape[0])
            return embeds, scale

    return Text(model).eval(), Image(model).eval()


def hub_layout(model, out_dir: Path, ids, pixels) -> None:
    """The same weights in the Hub's two-graph layout (see the module docstring), checked against PyTorch."""
    import shutil

    import torch

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m.get_text_features(input_ids=input_ids)

    class Vision(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m.get_image_features(pixel_values=pixel_values)

    hub = out_dir.parent / (out_dir.name + "-hub")
    (hub / "onnx").mkdir(parents=True, exist_ok=True)
    for f in out_dir.iterdir():
        if f.is_file() and f.suffix == ".json":
            shutil.copy(f, hub / f.name)
    with torch.no_grad():
        onnx_export(Text(model).eval(), (ids,), hub / "onnx" / "text_model.onnx", ["input_ids"], ["text_embeds"],
                    {"input_ids": {0: "prompts", 1: "tokens"}, "text_embeds": {0: "prompts"}})
        onnx_export(Vision(model).eval(), (pixels,), hub / "onnx" / "vision_model.onnx", ["pixel_values"],
                    ["image_embeds"], {"pixel_values": {0: "images"}, "image_embeds": {0: "images"}})
        t = ort_session(hub / "onnx" / "text_model.onnx").run(None, {"input_ids": ids.numpy()})[0]
        i = ort_session(hub / "onnx" / "vision_model.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
        d = max(max_diff(t, model.get_text_features(input_ids=ids).numpy()),
                max_diff(i, model.get_image_features(pixel_values=pixels).numpy()))
    log(f"hub layout ({hub}): ORT vs PyTorch {d:.3e}")
    if d > TOL:
        raise SystemExit(f"FAIL: the hub layout differs from PyTorch by {d}")


def logits_from(image_embeds, text_embeds, scale: float):
    """CLIPModel.forward's logits_per_image from the graphs' outputs (float64, for the goldens' checks)."""
    i = np.asarray(image_embeds, np.float64)
    t = np.asarray(text_embeds, np.float64)
    i = i / np.linalg.norm(i, axis=-1, keepdims=True)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    return scale * i @ t.T


def export(out: str, golden: str | None, seed: int, from_pretrained: str | None) -> None:
    import torch
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizerFast

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if from_pretrained:
        model = CLIPModel.from_pretrained(from_pretrained).eval()
        proc = CLIPProcessor.from_pretrained(from_pretrained)
        tok, ip = proc.tokenizer, proc.image_processor
        if tok.eos_token_id != len(tok) - 1:
            raise SystemExit(f"{from_pretrained}: end-of-text is not the largest id; CLIP's pooling needs it")
    else:
        tok = CLIPTokenizerFast.from_pretrained(
            str(TOKENIZER_FROM), model_max_length=CONTEXT, pad_token="<|endoftext|>"
        )
        assert tok.pad_token_id == tok.eos_token_id == len(tok) - 1
        model = CLIPModel(tiny_config(tok)).eval()
        ip = image_processor(IMAGE_SIZE)
    proc = CLIPProcessor(image_processor=ip, tokenizer=tok)
    cfg = model.config
    size = cfg.vision_config.image_size
    ctx = tok.model_max_length
    log(f"clip: {sum(p.numel() for p in model.parameters()):,} parameters, images {size}x{size}, "
        f"text context {ctx}, vocab {len(tok)} (eos {tok.eos_token_id}), logit scale {model.logit_scale.exp():.4f}")

    cfg.save_pretrained(str(out_dir))
    conf = json.loads((out_dir / "config.json").read_text())
    assert conf["model_type"] == "clip"
    ip.save_pretrained(str(out_dir))
    tok.backend_tokenizer.no_padding()
    tok.backend_tokenizer.no_truncation()
    tok.save_pretrained(str(out_dir), legacy_format=False)

    text, image = wrappers(model)
    enc = proc(text=PROMPTS, padding="max_length", truncation=True, max_length=ctx, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn((3, 3, size, size), generator=gen)
    onnx_dir = out_dir / "onnx"
    with torch.no_grad():
        onnx_export(text, (ids, mask), onnx_dir / "text_encoder.onnx", ["input_ids", "attention_mask"],
                    ["text_embeds"], {"input_ids": {0: "prompts"}, "attention_mask": {0: "prompts"},
                                      "text_embeds": {0: "prompts"}})
        onnx_export(image, (pixels,), onnx_dir / "image_encoder.onnx", ["pixel_values"],
                    ["image_embeds", "logit_scale"], {"pixel_values": {0: "images"}, "image_embeds": {0: "images"},
                                                       "logit_scale": {0: "images"}})

    # ORT against PyTorch's CLIPModel.forward, with other prompt and image counts than the traced ones.
    diffs = {}
    ts, ims = ort_session(onnx_dir / "text_encoder.onnx"), ort_session(onnx_dir / "image_encoder.onnx")
    with torch.no_grad():
        for n, b in ((len(PROMPTS), 3), (2, 1), (3, 5)):
            i, m = ids[:n], mask[:n]
            px = torch.randn((b, 3, size, size), generator=gen)
            full = model(input_ids=i, attention_mask=m, pixel_values=px)
            got_t = ts.run(None, {"input_ids": i.numpy(), "attention_mask": m.numpy()})[0]
            got_i, got_s = ims.run(None, {"pixel_values": px.numpy()})
            assert got_s.shape == (b,)
            want_t = model.get_text_features(input_ids=i, attention_mask=m).numpy()
            diffs["text_embeds"] = max(diffs.get("text_embeds", 0.0), max_diff(got_t, want_t))
            diffs["image_embeds"] = max(diffs.get("image_embeds", 0.0),
                                        max_diff(got_i, model.get_image_features(pixel_values=px).numpy()))
            got_l = logits_from(got_i, got_t, float(got_s[0]))
            diffs["logits_per_image"] = max(diffs.get("logits_per_image", 0.0),
                                            max_diff(got_l, full.logits_per_image.numpy()))
    log("ORT vs PyTorch (CLIPModel): max|diff| " + ", ".join(f"{k} {v:.3e}" for k, v in diffs.items()))
    if max(diffs.values()) > TOL:
        raise SystemExit(f"FAIL: ORT differs from PyTorch by more than {TOL}")

    if not from_pretrained:
        hub_layout(model, out_dir, ids, pixels)

    info = {
        "family": "clip",
        "test_model": not from_pretrained,
        "random_weights": not from_pretrained,
        "note": ("random weights: a test model for the plumbing and parity, its scores mean nothing"
                 if not from_pretrained else f"weights of {from_pretrained}"),
        "seed": seed,
        "image_size": size,
        "text_context": ctx,
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False, do_constant_folding=True)",
        "ort_vs_torch_max_abs_diff": diffs,
        "versions": versions(),
    }
    (out_dir / "export_info.json").write_text(json.dumps(info, indent=2) + "\n")
    if golden:
        write_goldens(Path(golden), model, proc, ts, ims)


def write_goldens(dst: Path, model, proc, ts, ims) -> None:
    import hashlib

    import torch
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    indices = [EVENT_START + i for i in spread(EVENT_FRAMES, NUM_FRAMES)]
    frames = decode_frames(REPO / "tests" / "fixtures" / "bikes.mp4", indices)
    photos = [np.asarray(Image.open(REPO / "tests" / "fixtures" / p).convert("RGB")) for p in PHOTOS]
    # A crop of a frame, as locate --rerank and the verifier hand CLIP: not square, smaller than the model's input
    # on one side (the resize enlarges it), so the resize and the crop both matter.
    crop = frames[0][100:130, 200:290]
    images = list(frames) + photos + [np.ascontiguousarray(crop)]
    inputs = proc(text=PROMPTS, images=images, padding="max_length", truncation=True,
                  max_length=proc.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        text_embeds = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        image_embeds = model.get_image_features(pixel_values=inputs["pixel_values"])
    logits = out.logits_per_image.numpy()
    scale = float(model.logit_scale.detach().exp())
    got_t = ts.run(None, {"input_ids": inputs["input_ids"].numpy(), "attention_mask": inputs["attention_mask"].numpy()})[0]
    got_i, _ = ims.run(None, {"pixel_values": inputs["pixel_values"].numpy()})
    d = max_diff(logits_from(got_i, got_t, scale), logits)
    log(f"goldens: {len(images)} images, logits_per_image ORT vs PyTorch {d:.3e}")
    if d > TOL:
        raise SystemExit(f"FAIL: ORT differs from PyTorch on the golden images by {d}")
    # The verifier on the 8 frames (see src/infer/clip.rs): the L2-normalised image embeddings averaged over the
    # frames and normalised again, against the prompts, times the logit scale; softmax over the prompts.
    e = image_embeds[:NUM_FRAMES].double()
    e = e / e.norm(dim=-1, keepdim=True)
    video = e.mean(dim=0)
    video = video / video.norm()
    t = text_embeds.double()
    t = t / t.norm(dim=-1, keepdim=True)
    verify_logits = (scale * video @ t.T).numpy()
    verify_probs = torch.softmax(torch.from_numpy(verify_logits), dim=0).numpy()
    save_npy(dst / "pixel_values.npy", inputs["pixel_values"].numpy(), np.float32)
    save_npy(dst / "input_ids.npy", inputs["input_ids"].numpy(), np.int64)
    save_npy(dst / "attention_mask.npy", inputs["attention_mask"].numpy(), np.int64)
    save_npy(dst / "text_embeds.npy", text_embeds.numpy(), np.float32)
    save_npy(dst / "image_embeds.npy", image_embeds.numpy(), np.float32)
    save_npy(dst / "logits_per_image.npy", logits, np.float32)
    meta = {
        "video": "tests/fixtures/bikes.mp4",
        "decode": "gst-launch-1.0 filesrc ! decodebin ! videoconvert ! video/x-raw,format=RGB (as tests/common decode)",
        "frames": indices,
        "frames_rule": f"{EVENT_START} + floor(i * {EVENT_FRAMES} / {NUM_FRAMES}), i = 0..{NUM_FRAMES}",
        "frame_sha256": [hashlib.sha256(f.tobytes()).hexdigest() for f in frames],
        "photos": PHOTOS,
        "crop": {"frame": indices[0], "x": 200, "y": 100, "width": 90, "height": 30},
        "images": "the frames, then the photos, then the crop",
        "prompts": PROMPTS,
        "processor": "CLIPProcessor(CLIPImageProcessor, CLIPTokenizerFast) padding=max_length truncation=True",
        "logit_scale": scale,
        "verify_logits": verify_logits.tolist(),
        "verify_probs": verify_probs.tolist(),
        "verify_rule": "mean of the frames' L2-normalised image_embeds, normalised again; logit_scale * cosine",
        "ort_vs_torch_max_abs_diff": d,
        "versions": versions(),
    }
    (dst / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
