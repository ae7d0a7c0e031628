"""X-CLIP for lookout's verifier (issue 13): used by `models/export_verifier.py --xclip`; see its docstring.

Tiny mode builds a seeded random-weight `XCLIPModel` from an `XCLIPConfig`; `--from-pretrained` loads real weights
from the Hub instead (on a machine with network). Either way the graphs are exported at opset 17 and checked
against PyTorch with ONNX Runtime, and with `--golden` the goldens on bikes.mp4 are written.
"""

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OPSET = 17
# ORT against PyTorch, in logits (the export probe measured 2e-5 or better).
TOL = 2e-5
TOL_FULL = 1e-4
# The tiny model's frames: 8 of 32x32, the config's fixed frame count and image size.
NUM_FRAMES = 8
IMAGE_SIZE = 32
# The golden event: frames spread over 2 s (50 frames at 25 fps) from this frame, as lookout's watch takes them:
# frame i of N at floor(i * available / N) (src/infer/verify.rs `spread`).
EVENT_START = 100
EVENT_FRAMES = 50
PROMPTS = [
    "a person riding a bicycle",
    "people walking past each other",
    "a person standing still",
    "an empty street with nothing happening",
]
# The tiny CLIP tokenizer OWL's export made (end-of-text is the largest id), set up as the Hub X-CLIP tokenizers
# are: a context of 77 tokens, padded with end-of-text (argmax pooling still finds the first, the real one).
TOKENIZER_FROM = REPO / "models" / "tiny" / "owlvit"
CONTEXT = 77


def log(*a):
    print(*a, flush=True)


def spread(available: int, n: int) -> list[int]:
    return [i * available // n for i in range(n)]


def tiny_config(tok):
    from transformers import XCLIPConfig

    vocab = len(tok)
    assert tok.eos_token_id == vocab - 1, "X-CLIP pools at the argmax id: end-of-text must be the largest id"
    text = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=tok.model_max_length, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, mit_hidden_size=32,
        mit_intermediate_size=64, mit_num_hidden_layers=1, mit_num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=8, num_frames=NUM_FRAMES,
    )
    return XCLIPConfig(
        text_config=text, vision_config=vision, projection_dim=32, prompt_layers=1, prompt_num_attention_heads=2,
    )


def image_processor(size: int):
    from transformers import VideoMAEImageProcessor

    # XCLIPProcessor's image processor: resize the shortest edge (Pillow bicubic), centre crop, ImageNet mean/std.
    return VideoMAEImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )



def wrappers(model):
    import torch

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m.get_text_features(input_ids=input_ids, attention_mask=attention_mask)

    class Video(torch.nn.Module):
        """XCLIPModel.forward from the text features on (modeling_x_clip.py, transformers 4.57)."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values, text_embeds):
            m = self.m
            b, t, c, h, w = pixel_values.shape
            vision = m.vision_model(pixel_values=pixel_values.reshape(-1, c, h, w))
            video_embeds = m.visual_projection(vision[1])
            cls_features = video_embeds.view(b, t, -1)
            video_embeds = m.mit(cls_features)[1]
            img = m.prompts_visual_layernorm(vision[0][:, 1:, :])
            img = img @ m.prompts_visual_projection
            img = img.view(b, t, -1, video_embeds.shape[-1]).mean(dim=1, keepdim=False)
            text = text_embeds.unsqueeze(0).expand(b, -1, -1)
            text = text + m.prompts_generator(text, img)
            video_embeds = video_embeds / video_embeds.norm(p=2, dim=-1, keepdim=True)
            text = text / text.norm(p=2, dim=-1, keepdim=True)
            return torch.einsum("bd,bkd->bk", video_embeds, m.logit_scale.exp() * text)

    return Text(model).eval(), Video(model).eval()


def onnx_export(module, args, path: Path, input_names, output_names, dynamic_axes):
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(str(path))


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


def decode_frames(video: Path, indices: list[int]) -> list[np.ndarray]:
    """The frames at `indices`, decoded as lookout's tests decode (GStreamer decodebin ! videoconvert ! RGB)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as td:
        subprocess.run(
            ["gst-launch-1.0", "-q", "filesrc", f"location={video}", "!", "decodebin", "!", "videoconvert", "!",
             "video/x-raw,format=RGB", "!", "pngenc", "compression-level=1", "!", "multifilesink",
             f"location={td}/f%05d.png"],
            check=True, timeout=300,
        )
        return [np.asarray(Image.open(f"{td}/f{i:05d}.png").convert("RGB")) for i in indices]


def save_npy(path: Path, arr, dtype):
    np.save(path, np.ascontiguousarray(np.asarray(arr, dtype=dtype)))


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ["torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy", "pillow"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def export(out: str, golden: str | None, seed: int, from_pretrained: str | None, full: bool = False) -> None:
    """Tiny (default), full-size random weights (`full`: microsoft/xclip-base-patch32's architecture, the
    `XCLIPConfig` defaults, with the real CLIP tokenizer of models/clip-tokenizer; for `make bench-verify`), or
    `from_pretrained` real weights."""
    import torch
    from transformers import CLIPTokenizerFast, XCLIPModel, XCLIPProcessor

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if from_pretrained:
        model = XCLIPModel.from_pretrained(from_pretrained).eval()
        proc = XCLIPProcessor.from_pretrained(from_pretrained)
        tok, ip = proc.tokenizer, proc.image_processor
        if tok.eos_token_id != len(tok) - 1:
            raise SystemExit(f"{from_pretrained}: end-of-text is not the largest id; X-CLIP's pooling needs it")
    elif full:
        from transformers import XCLIPConfig

        tok = CLIPTokenizerFast.from_pretrained(
            str(REPO / "models" / "clip-tokenizer"), model_max_length=CONTEXT, pad_token="<|endoftext|>"
        )
        assert tok.pad_token_id == tok.eos_token_id == len(tok) - 1
        text = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = XCLIPModel(XCLIPConfig(text_config=text)).eval()
        ip = image_processor(model.config.vision_config.image_size)
    else:
        tok = CLIPTokenizerFast.from_pretrained(
            str(TOKENIZER_FROM), model_max_length=CONTEXT, pad_token="<|endoftext|>"
        )
        assert tok.pad_token_id == tok.eos_token_id == len(tok) - 1
        model = XCLIPModel(tiny_config(tok)).eval()
        ip = image_processor(IMAGE_SIZE)
    proc = XCLIPProcessor(image_processor=ip, tokenizer=tok)
    cfg = model.config
    frames_n, size = cfg.vision_config.num_frames, cfg.vision_config.image_size
    ctx = tok.model_max_length
    log(f"x-clip: {sum(p.numel() for p in model.parameters()):,} parameters, {frames_n} frames of {size}x{size}, "
        f"text context {ctx}, vocab {len(tok)} (eos {tok.eos_token_id})")

    cfg.save_pretrained(str(out_dir))
    conf = json.loads((out_dir / "config.json").read_text())
    assert conf["model_type"] == "xclip"
    ip.save_pretrained(str(out_dir))
    # The plain serialization (no padding, no truncation recorded in tokenizer.json), as the Hub files are.
    tok.backend_tokenizer.no_padding()
    tok.backend_tokenizer.no_truncation()
    tok.save_pretrained(str(out_dir), legacy_format=False)

    text, video = wrappers(model)
    enc = proc(text=PROMPTS, padding="max_length", truncation=True, max_length=ctx, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn((1, frames_n, 3, size, size), generator=gen)
    onnx_dir = out_dir / "onnx"
    with torch.no_grad():
        onnx_export(text, (ids, mask), onnx_dir / "text_encoder.onnx", ["input_ids", "attention_mask"],
                    ["text_embeds"], {"input_ids": {0: "prompts"}, "attention_mask": {0: "prompts"},
                                      "text_embeds": {0: "prompts"}})
        embeds = text(ids, mask)
        onnx_export(video, (pixels, embeds), onnx_dir / "video.onnx", ["pixel_values", "text_embeds"],
                    ["logits_per_video"], {"text_embeds": {0: "prompts"}, "logits_per_video": {1: "prompts"}})

    # ORT against PyTorch: on random pixels, and on the prompts split both ways (a different prompt count).
    diffs = {}
    ts, vs = ort_session(onnx_dir / "text_encoder.onnx"), ort_session(onnx_dir / "video.onnx")
    with torch.no_grad():
        for n in (len(PROMPTS), 2):
            i, m = ids[:n], mask[:n]
            want_t = model.get_text_features(input_ids=i, attention_mask=m).numpy()
            got_t = ts.run(None, {"input_ids": i.numpy(), "attention_mask": m.numpy()})[0]
            diffs["text_embeds"] = max(diffs.get("text_embeds", 0.0), max_diff(got_t, want_t))
            forward = model(input_ids=i, attention_mask=m, pixel_values=pixels)
            got_v = vs.run(None, {"pixel_values": pixels.numpy(), "text_embeds": got_t})[0]
            diffs["logits_per_video"] = max(diffs.get("logits_per_video", 0.0),
                                            max_diff(got_v, forward.logits_per_video.numpy()))
    log(f"ORT vs PyTorch (XCLIPModel.forward): max|diff| text_embeds {diffs['text_embeds']:.3e}, "
        f"logits_per_video {diffs['logits_per_video']:.3e}")
    # At full size the sums are 24 times longer: float noise reaches 5e-5 in logits of ~14 (random weights); the
    # bound there is the parity tests' 1e-4.
    tol = TOL_FULL if full else TOL
    if max(diffs.values()) > tol:
        raise SystemExit(f"FAIL: ORT differs from PyTorch by more than {tol}")

    info = {
        "family": "xclip",
        "test_model": not from_pretrained,
        "full_size": full,
        "note": ("random weights: a test model for the plumbing and parity, its verdicts mean nothing"
                 if not from_pretrained else f"weights of {from_pretrained}"),
        "seed": seed,
        "num_frames": frames_n,
        "image_size": size,
        "text_context": ctx,
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False, do_constant_folding=True)",
        "ort_vs_torch_max_abs_diff": diffs,
        "versions": versions(),
    }
    (out_dir / "export_info.json").write_text(json.dumps(info, indent=2) + "\n")
    if golden:
        write_goldens(Path(golden), model, proc, vs, ts, frames_n)


def write_goldens(dst: Path, model, proc, vs, ts, frames_n: int) -> None:
    import torch

    dst.mkdir(parents=True, exist_ok=True)
    indices = [EVENT_START + i for i in spread(EVENT_FRAMES, frames_n)]
    frames = decode_frames(REPO / "tests" / "fixtures" / "bikes.mp4", indices)
    # XCLIPProcessor in 4.57 hands `images` to its VideoMAE image processor (a list of frames is one video);
    # `videos=` would go to a `video_processor` attribute it does not have, and be dropped.
    inputs = proc(text=PROMPTS, images=list(frames), padding="max_length", truncation=True,
                  max_length=proc.tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    logits = out.logits_per_video.numpy()
    probs = torch.softmax(out.logits_per_video, dim=1).numpy()
    emb = ts.run(None, {"input_ids": inputs["input_ids"].numpy(), "attention_mask": inputs["attention_mask"].numpy()})[0]
    ort_logits = vs.run(None, {"pixel_values": inputs["pixel_values"].numpy(), "text_embeds": emb})[0]
    d = max_diff(ort_logits, logits)
    log(f"bikes.mp4 frames {indices}: logits_per_video {np.round(logits[0], 4).tolist()}, "
        f"probs {np.round(probs[0], 4).tolist()}; ORT vs PyTorch {d:.3e}")
    if d > TOL:
        raise SystemExit(f"FAIL: ORT differs from PyTorch on bikes.mp4 by {d}")
    save_npy(dst / "pixel_values.npy", inputs["pixel_values"].numpy(), np.float32)
    save_npy(dst / "input_ids.npy", inputs["input_ids"].numpy(), np.int64)
    save_npy(dst / "attention_mask.npy", inputs["attention_mask"].numpy(), np.int64)
    save_npy(dst / "logits_per_video.npy", logits, np.float32)
    save_npy(dst / "probs.npy", probs, np.float32)
    import hashlib

    meta = {
        "video": "tests/fixtures/bikes.mp4",
        "decode": "gst-launch-1.0 filesrc ! decodebin ! videoconvert ! video/x-raw,format=RGB (as tests/common decode)",
        "frames": indices,
        "frames_rule": f"{EVENT_START} + floor(i * {EVENT_FRAMES} / {frames_n}), i = 0..{frames_n}",
        "frame_sha256": [hashlib.sha256(f.tobytes()).hexdigest() for f in frames],
        "frame_size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
        "prompts": PROMPTS,
        "processor": "XCLIPProcessor(VideoMAEImageProcessor, CLIPTokenizerFast) padding=max_length truncation=True",
        "logits_per_video": logits[0].tolist(),
        "probs": probs[0].tolist(),
        "argmax": int(np.argmax(logits[0])),
        "ort_vs_torch_max_abs_diff": d,
        "versions": versions(),
    }
    (dst / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    os.sync()
