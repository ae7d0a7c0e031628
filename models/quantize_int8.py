#!/usr/bin/env python3
"""Write int8 variants of a model directory's image-side graphs with ONNX Runtime's quantization tools (issue 17).

The export scripts (export_owl.py, export_gdino.py) call this at the end of every export; run it by hand on a
directory exported earlier (tiny, --full, or --from-pretrained with real weights):

    /work/venv/bin/python models/quantize_int8.py models/full/owlvit-b32
    /work/venv/bin/python models/quantize_int8.py models/full/grounding-dino-t --layouts split

What it writes (the names `lookout --precision int8` looks for):

  split layout   OWL-ViT/OWLv2:   onnx/image_embedder.onnx -> onnx/image_embedder_int8.onnx
                 Grounding DINO:  onnx/detector.onnx       -> onnx/detector_int8.onnx
  hf layout      onnx/model.onnx -> onnx/model_quantized.onnx (the Hub's name for its 8-bit graph, so
                 `--layout hf:quantized` and `--precision int8` find lookout's export and the Hub's alike)
  verifiers      X-CLIP: onnx/video.onnx -> onnx/video_int8.onnx; CLIP: onnx/image_encoder.onnx ->
                 onnx/image_encoder_int8.onnx (the graph run once per event; `[verify] precision = "int8"`,
                 `watch --verifier-precision int8`). The Hub's CLIP ships its own onnx/vision_model_quantized.onnx.

The text encoder stays fp32: it runs once per set of queries (or of a verifier's prompts), off the frame path, so
int8 would buy nothing there.

Method (the default, `--method dynamic`): `quantize_dynamic` on MatMul and Gemm only, weights int8 per output
channel (`per_channel=True`), activations quantized per run (uint8, one scale per tensor, computed from the
tensor itself): no calibration set, and the attention products between two activations stay exact in the sense
that each input gets its own range. Convolutions (the patch embedding) stay fp32.
`--method static` instead writes a QDQ graph calibrated (MinMax) on the golden photos tests/fixtures/*.png
(OWL families only): fixed activation ranges, no per-run quantization cost. It is kept only when it is faster: see
BENCHMARKS.md ("int8") for the measured figures and the choice.

Every int8 graph is checked against its fp32 graph on the golden photos (verifiers: on 8 frames of bikes.mp4): the largest differences of the outputs
(boxes in normalised units, logits or class embeddings) are printed and recorded in export_info.json under "int8".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# onnxruntime.quantization advises pre-processing on the root logger at every call; the graphs here are already
# exported with constant folding and run through ORT's own optimiser when loaded.
logging.getLogger().setLevel(logging.ERROR)

REPO = Path(__file__).resolve().parent.parent
PHOTOS = [REPO / "tests" / "fixtures" / f"{n}.png" for n in ("astronaut", "coffee", "grace_hopper")]
OP_TYPES = ["MatMul", "Gemm"]
# The graph of each layout and family, and the name of its int8 variant.
SPLIT_IMAGE_GRAPH = {"owl": ("onnx/image_embedder.onnx", "onnx/image_embedder_int8.onnx"),
                     "gdino": ("onnx/detector.onnx", "onnx/detector_int8.onnx"),
                     # The verifiers' per-event graphs (their only layout is lookout's split export).
                     "xclip": ("onnx/video.onnx", "onnx/video_int8.onnx"),
                     "clip": ("onnx/image_encoder.onnx", "onnx/image_encoder_int8.onnx")}
VERIFIERS = ("xclip", "clip")
HF_GRAPH = ("onnx/model.onnx", "onnx/model_quantized.onnx")
# Queries the Grounding DINO check (and the hf check) runs with.
CHECK_QUERIES = ["a photo of an astronaut", "a cup of coffee", "a flag"]


def log(*a):
    print(*a, flush=True)


def family_of(model_dir: Path) -> str:
    mt = json.loads((model_dir / "config.json").read_text()).get("model_type")
    if mt in ("owlvit", "owlv2"):
        return "owl"
    if mt in ("grounding-dino", "mm-grounding-dino"):
        return "gdino"
    if mt in VERIFIERS:
        return mt
    raise SystemExit(f"{model_dir}: model_type {mt!r} is not a model lookout quantizes (owlvit, owlv2, "
                     "grounding-dino, mm-grounding-dino, xclip, clip)")


def session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def photos():
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in PHOTOS]


# --------------------------------------------------------------------------------------------------------------
# Inputs of each graph on the golden photos
# --------------------------------------------------------------------------------------------------------------


def owl_pixels(model_dir: Path) -> list[np.ndarray]:
    from transformers import AutoImageProcessor

    ip = AutoImageProcessor.from_pretrained(str(model_dir), use_fast=False)
    return [np.ascontiguousarray(ip(images=im, return_tensors="np")["pixel_values"], dtype=np.float32)
            for im in photos()]


def owl_text(model_dir: Path, queries: list[str]) -> dict:
    from transformers import CLIPTokenizerFast

    tok = CLIPTokenizerFast.from_pretrained(str(model_dir))
    enc = tok(queries, padding="max_length", truncation=True, max_length=16, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def gdino_inputs(model_dir: Path, split: bool) -> list[dict]:
    """Per photo: the detector's (split) or model.onnx's (hf) inputs, with CHECK_QUERIES as the prompt."""
    import torch
    from transformers import AutoTokenizer, GroundingDinoImageProcessor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import export_gdino

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ip = GroundingDinoImageProcessor.from_pretrained(str(model_dir))
    txt = export_gdino.text_inputs(tok, [". ".join(CHECK_QUERIES) + "."])
    if split:
        feats = session(model_dir / "onnx/text_encoder.onnx").run(
            ["text_features"], {"input_ids": txt["input_ids"], "token_type_ids": txt["token_type_ids"]})[0]
        masks, pos = export_gdino.masks_loop_free(torch.from_numpy(txt["input_ids"]))
        text_in = {"text_features": feats, "attention_mask": txt["attention_mask"],
                   "text_self_attention_masks": masks.numpy(), "position_ids": pos.numpy()}
    else:
        text_in = txt
    out = []
    for im in photos():
        enc = ip(images=im, return_tensors="np")
        out.append({"pixel_values": np.ascontiguousarray(enc["pixel_values"], dtype=np.float32),
                    "pixel_mask": np.ascontiguousarray(enc["pixel_mask"], dtype=np.int64), **text_in})
    return out


def verifier_inputs(model_dir: Path, fam: str) -> list[dict]:
    """The per-event graph's inputs on one event's frames of bikes.mp4 (the frames the goldens use): X-CLIP's
    pixel tensor with its prompts' embeddings from the model's own text graph, or CLIP's batch of frames."""
    from transformers import CLIPProcessor, XCLIPProcessor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import export_xclip

    cfg = json.loads((model_dir / "config.json").read_text())
    n = int(cfg.get("vision_config", {}).get("num_frames", 8)) if fam == "xclip" else 8
    indices = [export_xclip.EVENT_START + i for i in export_xclip.spread(export_xclip.EVENT_FRAMES, n)]
    frames = list(export_xclip.decode_frames(REPO / "tests" / "fixtures" / "bikes.mp4", indices))
    if fam == "clip":
        proc = CLIPProcessor.from_pretrained(str(model_dir))
        return [{"pixel_values": np.ascontiguousarray(proc(images=frames, return_tensors="np")["pixel_values"],
                                                      dtype=np.float32)}]
    proc = XCLIPProcessor.from_pretrained(str(model_dir))
    enc = proc(text=export_xclip.PROMPTS, images=frames, padding="max_length", truncation=True,
               max_length=proc.tokenizer.model_max_length, return_tensors="np")
    text_embeds = session(model_dir / "onnx/text_encoder.onnx").run(
        ["text_embeds"], {"input_ids": enc["input_ids"].astype(np.int64),
                          "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
    return [{"pixel_values": np.ascontiguousarray(enc["pixel_values"], dtype=np.float32), "text_embeds": text_embeds}]


def graph_inputs(model_dir: Path, fam: str, layout: str) -> list[dict]:
    if fam in VERIFIERS:
        return verifier_inputs(model_dir, fam)
    if fam == "owl":
        px = owl_pixels(model_dir)
        if layout == "split":
            return [{"pixel_values": p} for p in px]
        return [{**owl_text(model_dir, CHECK_QUERIES), "pixel_values": p} for p in px]
    return gdino_inputs(model_dir, layout == "split")


# --------------------------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------------------------


class _Reader:
    """The calibration set of `quantize_static`: the given input dicts, once each."""

    def __init__(self, inputs: list[dict]):
        self.it = iter(inputs)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):  # pragma: no cover - called by some calibrators
        pass


def excluded_nodes(src: Path, patterns: list[str]) -> list[str]:
    """The MatMul/Gemm nodes of `src` whose names match any of the regular expressions `patterns`."""
    import re

    import onnx

    if not patterns:
        return []
    m = onnx.load(str(src), load_external_data=False)
    return [n.name for n in m.graph.node
            if n.op_type in OP_TYPES and any(re.search(p, n.name) for p in patterns)]


def quantize(src: Path, dst: Path, method: str, calib: list[dict] | None, exclude: list[str] | None = None) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    t0 = time.time()
    tmp = dst.with_suffix(".tmp.onnx")
    if method == "dynamic":
        skip = excluded_nodes(src, exclude or [])
        quantize_dynamic(str(src), str(tmp), op_types_to_quantize=OP_TYPES, per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=skip)
        how = {"method": "dynamic", "op_types": OP_TYPES, "per_channel": True, "weights": "int8",
               "activations": "uint8, per tensor, range computed per run",
               "kept_fp32": {"patterns": exclude or [], "nodes": len(skip)}}
    else:
        with tempfile.TemporaryDirectory() as td:
            # The calibrator writes an augmented copy of the graph next to it: keep that out of the model directory.
            quantize_static(str(src), str(tmp), _Reader(calib or []), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=OP_TYPES, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibTensorRangeSymmetric": False})
            del td
        how = {"method": "static QDQ", "op_types": OP_TYPES, "per_channel": True, "weights": "int8",
               "activations": "uint8, per tensor, MinMax-calibrated on tests/fixtures/{astronaut,coffee,grace_hopper}.png"}
    os.replace(tmp, dst)
    how.update(file=str(dst.relative_to(dst.parent.parent)), bytes=dst.stat().st_size,
               fp32_bytes=src.stat().st_size, seconds=round(time.time() - t0, 1))
    return how


def drift(src: Path, dst: Path, inputs: list[dict]) -> dict:
    """Largest |int8 - fp32| of every output over the golden photos, slot by slot.

    For Grounding DINO a slot is one of the 900 proposals picked by a top-k over the encoder's outputs: int8 can
    reorder near-ties, so its slot differences overstate the drift of what a user sees (each query's best box);
    tests/parity_int8.rs and the benchmarks measure that."""
    s32, s8 = session(src), session(dst)
    names = [o.name for o in s32.get_outputs()]
    feed_names = {i.name for i in s32.get_inputs()}
    worst: dict[str, float] = {}
    for feed in inputs:
        feed = {k: v for k, v in feed.items() if k in feed_names}
        a, b = s32.run(names, feed), s8.run(names, feed)
        for n, x, y in zip(names, a, b):
            # Grounding DINO's logits are -inf outside the prompt's tokens: the same places in both graphs.
            fx, fy = np.isfinite(x), np.isfinite(y)
            if not np.array_equal(fx, fy):
                raise SystemExit(f"{dst}: output {n} is not finite in other places than in {src}")
            d = np.abs(x[fx].astype(np.float64) - y[fy].astype(np.float64))
            worst[n] = max(worst.get(n, 0.0), float(d.max()) if d.size else 0.0)
    return {k: float(f"{v:.3e}") for k, v in worst.items()}


def default_layouts(model_dir: Path) -> list[str]:
    """Both layouts for OWL; split only for Grounding DINO (see --layouts) and the verifiers (their only one)."""
    return ["split", "hf"] if family_of(model_dir) == "owl" else ["split"]


def quantize_dir(model_dir: Path, layouts: list[str], method: str = "dynamic", keep_fp32: list[str] | None = None) -> dict:
    """Writes the int8 variants of `model_dir`'s graphs for `layouts`; returns (and records) what was done."""
    fam = family_of(model_dir)
    if method == "static" and fam != "owl":
        raise SystemExit("--method static is implemented for the OWL families only (dynamic for the others)")
    if fam in VERIFIERS and layouts != ["split"]:
        raise SystemExit(f"{model_dir}: a verifier has one layout, lookout's export; leave out --layouts")
    done = {}
    for layout in layouts:
        src_rel, dst_rel = SPLIT_IMAGE_GRAPH[fam] if layout == "split" else HF_GRAPH
        src, dst = model_dir / src_rel, model_dir / dst_rel
        if not src.is_file():
            log(f"[int8] {model_dir}: no {src_rel}, {layout} layout skipped")
            continue
        inputs = graph_inputs(model_dir, fam, layout)
        how = quantize(src, dst, method, inputs if method == "static" else None, keep_fp32)
        how["max_abs_diff_vs_fp32_on_golden_photos"] = drift(src, dst, inputs)
        log(f"[int8] {dst} ({how['bytes'] / 1e6:.2f} MB, fp32 {how['fp32_bytes'] / 1e6:.2f} MB, {how['method']}, "
            f"{how['seconds']}s): max |int8 - fp32| {json.dumps(how['max_abs_diff_vs_fp32_on_golden_photos'])}")
        done[layout] = how
    info_path = model_dir / "export_info.json"
    if info_path.is_file() and done:
        info = json.loads(info_path.read_text())
        info.setdefault("int8", {}).update(done)
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    return done


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("model_dir", type=Path, nargs="+", help="model directories (lookout's export layout)")
    ap.add_argument("--layouts", help="comma-separated: split, hf (default: both for OWL; split for Grounding DINO, "
                    "whose hf graph re-runs BERT per image and whose Hub export ships its own model_quantized.onnx)")
    ap.add_argument("--method", choices=["dynamic", "static"], default="dynamic")
    ap.add_argument("--keep-fp32", action="append", metavar="REGEX", help="leave the MatMul/Gemm nodes whose names "
                    "match in fp32 (dynamic only; repeatable), e.g. 'bbox_embed|class_embed' for the heads")
    args = ap.parse_args(argv)
    for d in args.model_dir:
        layouts = [x for x in args.layouts.split(",") if x] if args.layouts else default_layouts(d)
        for lay in layouts:
            if lay not in ("split", "hf"):
                raise SystemExit(f"--layouts: unknown layout {lay!r}; use split and/or hf")
        quantize_dir(d, layouts, args.method, args.keep_fp32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
