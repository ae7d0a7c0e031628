#!/usr/bin/env python3
"""Build seeded random-weight OWL-ViT / OWLv2 models, export them to ONNX, and write test goldens.

Nothing here downloads anything: Hugging Face is not reachable from the build machines. The models are
built from transformers configs (`OwlViTConfig` / `Owlv2Config`) with `torch.manual_seed(seed)` random
weights, and the CLIP BPE tokenizer is rebuilt offline from `bpe_simple_vocab_16e6.txt.gz`, which ships
inside the `open_clip_torch` wheel.

Usage (always with the pinned venv, see models/requirements-export.txt):

    /work/venv/bin/python models/export_owl.py                      # tiny models + all test assets
    /work/venv/bin/python models/export_owl.py --only owlv2         # one family
    /work/venv/bin/python models/export_owl.py --full --only owlvit # full-size B/32 into models/full/ (gitignored)
    /work/venv/bin/python models/export_owl.py --out /tmp/m         # models elsewhere, no test assets

The default (tiny) run regenerates, deterministically:
  * models/tiny/owlvit/, models/tiny/owlv2/       model directories (layout below)
  * models/clip-tokenizer/                         the real 49408-token CLIP tokenizer (tokenizer.json + configs)
  * tests/fixtures/{astronaut,coffee,grace_hopper}.png, tests/fixtures/grace_hopper.jpg (matplotlib's file, byte
    for byte) and tests/fixtures/jpeg/*.jpg (small JPEGs Pillow encodes from crops of the photos: grayscale, CMYK,
    4:4:4, 4:2:2, progressive 4:2:0)
  * tests/golden/...                               transformers-produced goldens (preprocessing, tokens, raw
                                                   outputs, post-processed detections), see write_goldens()
  * tests/golden/jpeg/decode.json                 Pillow's decode of every JPEG fixture (sha256 of the RGB buffer)
Only tests/golden/{VERSIONS.txt,clip_tokens.json,owlvit/,owlv2/,jpeg/} are rewritten; anything else under tests/golden
(e.g. the hand-written preprocess_note.md) is left alone.

Model directory layout (Hugging Face style):
  config.json                 model config only (no weights)
  preprocessor_config.json    OwlViTImageProcessor / Owlv2ImageProcessor defaults with the model's image size
  tokenizer.json, tokenizer_config.json, special_tokens_map.json   CLIPTokenizerFast, model_max_length 16, pad "!"=0
  export_info.json            versions, seed, config summary, graph layouts and their input/output shapes
  onnx/model.onnx             "hf" layout: input_ids [Q,16] i64, attention_mask [Q,16] i64, pixel_values [1,3,S,S] f32
                                -> logits [1,P,Q], pred_boxes [1,P,4] (+ objectness_logits [1,P] for OWLv2). Q dynamic.
  onnx/text_encoder.onnx      "split": input_ids [N,16], attention_mask [N,16] -> text_embeds [N,D]. N dynamic.
                                text_embeds are exactly the query embeddings the class head receives (projected and
                                L2-normalised without epsilon by OwlViTModel/Owlv2Model.forward).
  onnx/image_embedder_int8.onnx, onnx/model_quantized.onnx
                              int8 variants of the image side and of the hf graph (models/quantize_int8.py), for
                              `lookout --precision int8`
  onnx/image_embedder.onnx    "split": pixel_values [B,3,S,S] -> class_embeds [B,P,D] (already divided by
                                (|x|+1e-6)), logit_shift [B,P,1], logit_scale [B,P,1] (elu(x)+1 applied),
                                pred_boxes [B,P,4] (cx,cy,w,h in [0,1], sigmoid applied) (+ objectness_logits [B,P]).
  The split layout reproduces the hf logits as
      logits[b,p,q] = (class_embeds[b,p] . (t_q / (|t_q| + 1e-6)) + logit_shift[b,p]) * logit_scale[b,p]
  (transformers additionally sets logits to float32-min for queries whose input_ids[q,0] == 0, i.e. all-pad rows).

Detection heads: with the combined configs transformers leaves the head Linear layers at N(0,1) (OWLv2, via
_init_weights) or PyTorch's default uniform init (OWL-ViT, whose detection model never calls post_init), which
saturates boxes and gives huge logits. The heads (class head dense0/logit_shift/logit_scale, box head MLP, OWLv2
objectness head) are therefore re-initialised: weight ~ N(0, 1/fan_in), bias 0, logit_shift bias -2.

Every exported graph is checked with onnxruntime against PyTorch (max abs diff printed, failure above 1e-4),
including dynamic sizes other than the traced one, and the split-layout logit reconstruction is checked
against the hf logits.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata as md
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEED = 0
OPSET = 17
MAX_LEN = 16  # text max_position_embeddings == tokenizer model_max_length
TINY_MERGES = 100  # tiny tokenizer: 512 byte tokens + first TINY_MERGES merges + BOS + EOS
TOL = 1e-4

QUERIES = ["a photo of an astronaut", "a cup of coffee", "a flag", "a woman in uniform"]

# Sentences for tokens.json goldens: punctuation, capitals, extra/odd whitespace, non-ASCII (precomposed and
# decomposed, i.e. NFC matters), emoji, empty, " " (what the processor pads ragged query lists with) and one
# longer than 16 tokens (truncated keeping EOS last).
TOKEN_SENTENCES = [
    "a photo of a cat",
    "A Photo Of A CAT!",
    "  a   cup\tof\n coffee  ",
    "it's a dog's 2nd frisbee, isn't it?",
    "un café à Zürich",
    "un cafe\u0301 a\u0300 Zu\u0308rich",
    "🐱 + 🐶 = ❤",
    "",
    " ",
    "a very long description of a small brown dog sitting next to a red fire hydrant on a busy street",
]

IMAGES = ["astronaut", "coffee", "grace_hopper"]
# The JPEG whose decode is grace_hopper.png: transformers on it must give grace_hopper's goldens bit for bit.
GRACE_HOPPER_JPG = "grace_hopper.jpg"

FAMILIES = {
    "owlvit": dict(tiny_dir="owlvit", full_dir="owlvit-b32"),
    "owlv2": dict(tiny_dir="owlv2", full_dir="owlv2-b16"),
}


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (GPT-2's) reversible byte -> unicode mapping, in CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_bpe_path() -> Path:
    import open_clip

    p = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not p.exists():
        raise SystemExit(f"missing {p}")
    return p


def write_clip_vocab(dst: Path, num_merges: int | None) -> int:
    """Write vocab.json/merges.txt exactly as CLIP's SimpleTokenizer builds its vocabulary.

    num_merges=None -> all 48894 merges (49408 tokens); otherwise only the first num_merges merges.
    Returns the vocabulary size. merges.txt gets a "#version" header line because transformers' CLIPTokenizer
    skips line 0 (`split("\\n")[1:49152-256-2+1]`), like CLIP does with the header of the .gz file.
    """
    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    if num_merges is not None:
        merges = merges[:num_merges]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(dst / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("".join(" ".join(m) + "\n" for m in merges))
    return len(vocab)


def build_tokenizer(num_merges: int | None):
    """CLIPTokenizerFast like the OWL-ViT Hub tokenizers: model_max_length 16, pad "!" (id 0)."""
    from transformers import CLIPTokenizerFast

    with tempfile.TemporaryDirectory() as td:
        n = write_clip_vocab(Path(td), num_merges)
        tok = CLIPTokenizerFast(
            vocab_file=str(Path(td) / "vocab.json"),
            merges_file=str(Path(td) / "merges.txt"),
            pad_token="!",
            model_max_length=MAX_LEN,
        )
        # Materialise the fast backend while the files exist, and drop the references to the temp files so
        # that save_pretrained(legacy_format=False) writes tokenizer.json only.
        tok.vocab_file = None
        tok.init_kwargs.pop("vocab_file", None)
        tok.init_kwargs.pop("merges_file", None)
    assert len(tok) == n, (len(tok), n)
    assert tok.pad_token_id == 0 and tok.convert_ids_to_tokens(0) == "!"
    assert tok.eos_token_id == n - 1 and tok.bos_token_id == n - 2
    if num_merges is None:
        ids = tok("a photo of a cat")["input_ids"]
        assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
        assert n == 49408
    return tok


def save_tokenizer(tok, dst: Path):
    from transformers import AutoTokenizer, CLIPTokenizerFast

    dst.mkdir(parents=True, exist_ok=True)
    # Calls with padding/truncation leave them enabled on the backend, and tokenizer.json would record that
    # state: save the plain (no padding, no truncation) serialization, like the Hub tokenizer.json files.
    tok.backend_tokenizer.no_padding()
    tok.backend_tokenizer.no_truncation()
    tok.save_pretrained(str(dst), legacy_format=False)
    saved = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["padding"] is None and saved["truncation"] is None
    # Round trip through transformers and through the raw `tokenizers` library (the Rust crate's Python binding).
    import tokenizers

    back = AutoTokenizer.from_pretrained(str(dst))
    assert isinstance(back, CLIPTokenizerFast), type(back)
    raw = tokenizers.Tokenizer.from_file(str(dst / "tokenizer.json"))
    for s in TOKEN_SENTENCES + QUERIES:
        a = tok(s, padding="max_length", truncation=True)
        b = back(s, padding="max_length", truncation=True)
        assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"], s
        if len(tok(s)["input_ids"]) <= MAX_LEN:
            assert raw.encode(s).ids == tok(s)["input_ids"], s
    assert back.model_max_length == MAX_LEN and back.pad_token_id == 0


def token_records(tok) -> list[dict]:
    recs = []
    for s in TOKEN_SENTENCES:
        full = tok(s)["input_ids"]
        enc = tok(s, padding="max_length", truncation=True, max_length=MAX_LEN)
        ids, mask = list(enc["input_ids"]), list(enc["attention_mask"])
        assert len(ids) == MAX_LEN and len(mask) == MAX_LEN
        r = {"text": s, "input_ids": ids, "attention_mask": mask, "tokens": tok.convert_ids_to_tokens(ids[: sum(mask)])}
        if len(full) > MAX_LEN:
            assert ids[-1] == tok.eos_token_id and ids[0] == tok.bos_token_id
            r["untruncated_input_ids"] = full
            r["note"] = (
                f"{len(full)} tokens untruncated. The processor does NOT truncate by default (padding='max_length' "
                "only, it would return a longer row); with truncation=True it keeps BOS + the first 14 tokens + EOS "
                "(EOS stays last)."
            )
        recs.append(r)
    return recs


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def make_config(family: str, tiny: bool, vocab_size: int):
    from transformers import Owlv2Config, OwlViTConfig

    bos, eos = vocab_size - 2, vocab_size - 1
    if tiny:
        text = dict(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=MAX_LEN, pad_token_id=0, bos_token_id=bos, eos_token_id=eos,
        )
        image_size = 96 if family == "owlvit" else 128
        vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                      image_size=image_size, patch_size=16)
        projection_dim = 32  # must equal text hidden_size: the class head's dense0 maps to text hidden_size
    else:
        text = dict(vocab_size=vocab_size, max_position_embeddings=MAX_LEN, pad_token_id=0, bos_token_id=bos,
                    eos_token_id=eos)
        # OWL-ViT B/32 at 768 is the OwlViTVisionConfig default; Owlv2VisionConfig defaults to 768 but the
        # released OWLv2 B/16 checkpoints run at 960.
        vision = dict(image_size=768, patch_size=32) if family == "owlvit" else dict(image_size=960, patch_size=16)
        projection_dim = 512
    cls = OwlViTConfig if family == "owlvit" else Owlv2Config
    cfg = cls(text_config=text, vision_config=vision, projection_dim=projection_dim)
    assert cfg.text_config.hidden_size == cfg.projection_dim
    return cfg


def _reinit_linear(lin, bias: float = 0.0):
    import torch

    with torch.no_grad():
        lin.weight.normal_(0.0, 1.0 / math.sqrt(lin.in_features))
        lin.bias.fill_(bias)


def build_model(family: str, cfg, seed: int):
    import torch
    from transformers import Owlv2ForObjectDetection, OwlViTForObjectDetection

    torch.manual_seed(seed)
    cls = OwlViTForObjectDetection if family == "owlvit" else Owlv2ForObjectDetection
    model = cls(cfg)
    ch = model.class_head
    _reinit_linear(ch.dense0)
    _reinit_linear(ch.logit_shift, bias=-2.0)
    _reinit_linear(ch.logit_scale)
    heads = [model.box_head] + ([model.objectness_head] if family == "owlv2" else [])
    for h in heads:
        for lin in (h.dense0, h.dense1, h.dense2):
            _reinit_linear(lin)
    model.eval()
    return model


def base(model):
    return model.owlvit if hasattr(model, "owlvit") else model.owlv2


def wrappers(model, family: str):
    import torch
    from torch import nn

    v2 = family == "owlv2"

    class HF(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, pixel_values):
            o = self.m(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, return_dict=True)
            out = (o.logits, o.pred_boxes)
            return out + (o.objectness_logits,) if v2 else out

    class TextEncoder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            b = base(self.m)
            pooled = b.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).pooler_output
            t = b.text_projection(pooled)
            # Same as OwlViTModel/Owlv2Model.forward: text_embeds / ||text_embeds|| (no epsilon).
            return t / torch.linalg.norm(t, ord=2, dim=-1, keepdim=True)

    class ImageEmbedder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            m = self.m
            feature_map = m.image_embedder(pixel_values=pixel_values)[0]
            b, h, w, d = feature_map.shape
            feats = feature_map.reshape(b, h * w, d)
            ch = m.class_head
            ce = ch.dense0(feats)
            ce = ce / (torch.linalg.norm(ce, dim=-1, keepdim=True) + 1e-6)
            shift = ch.logit_shift(feats)
            scale = ch.elu(ch.logit_scale(feats)) + 1
            boxes = m.box_predictor(feats, feature_map)
            out = (ce, shift, scale, boxes)
            return out + (m.objectness_predictor(feats),) if v2 else out

    return HF(model).eval(), TextEncoder(model).eval(), ImageEmbedder(model).eval()


def onnx_export(module, args, path: Path, input_names, output_names, dynamic_axes, io_shapes: dict):
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    import onnx

    # The tracer names some output dims after internal nodes ("Castlogits_dim_0"); write the real shapes.
    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output):
        want = io_shapes[v.name]
        dims = v.type.tensor_type.shape.dim
        assert len(dims) == len(want), (v.name, len(dims), want)
        for d, w in zip(dims, want):
            if isinstance(w, str):
                d.dim_param = w
            else:
                assert not d.dim_value or d.dim_value == w, (v.name, d.dim_value, w)
                d.dim_value = w
    onnx.save(m, str(path))
    onnx.checker.check_model(str(path))


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_close(name: str, got, want, diffs: dict, key: str):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise SystemExit(f"FAIL {name}: shape {got.shape} != {want.shape}")
    d = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
    diffs[key] = max(diffs.get(key, 0.0), d)
    log(f"    {name:<58} shape={str(tuple(got.shape)):<16} max|diff|={d:.3e}")
    if not d <= TOL:
        raise SystemExit(f"FAIL {name}: max abs diff {d} > {TOL}")


def random_pixels(gen, b, s):
    return gen.standard_normal((b, 3, s, s)).astype(np.float32)


def example_text(tok, texts):
    enc = tok(texts, padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def export_family(family: str, out_dir: Path, tok, tiny: bool, seed: int, image_processor) -> dict:
    """Build, export and verify one family. Returns a dict of stats."""
    import torch

    t0 = time.time()
    cfg = make_config(family, tiny, len(tok))
    model = build_model(family, cfg, seed)
    v2 = family == "owlv2"
    S = cfg.vision_config.image_size
    P = (S // cfg.vision_config.patch_size) ** 2
    D = cfg.projection_dim
    nparams = sum(p.numel() for p in model.parameters())
    log(f"[{family}] {'tiny' if tiny else 'full'}: S={S} patch={cfg.vision_config.patch_size} P={P} D={D} "
        f"vocab={cfg.text_config.vocab_size} params={nparams:,}")

    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "onnx").mkdir(parents=True)
    cfg.save_pretrained(str(out_dir))
    image_processor.save_pretrained(str(out_dir))
    save_tokenizer(tok, out_dir)

    hf, te, ie = wrappers(model, family)
    gen = np.random.default_rng(seed)
    ids4, mask4 = example_text(tok, QUERIES)
    px1 = random_pixels(gen, 1, S)
    px2 = random_pixels(gen, 2, S)
    T = torch.from_numpy

    hf_out = ["logits", "pred_boxes"] + (["objectness_logits"] if v2 else [])
    ie_out = ["class_embeds", "logit_shift", "logit_scale", "pred_boxes"] + (["objectness_logits"] if v2 else [])
    Q, N, B = "num_queries", "num_texts", "batch"
    hf_shapes = {"input_ids": [Q, MAX_LEN], "attention_mask": [Q, MAX_LEN], "pixel_values": [1, 3, S, S],
                 "logits": [1, P, Q], "pred_boxes": [1, P, 4], "objectness_logits": [1, P]}
    te_shapes = {"input_ids": [N, MAX_LEN], "attention_mask": [N, MAX_LEN], "text_embeds": [N, D]}
    ie_shapes = {"pixel_values": [B, 3, S, S], "class_embeds": [B, P, D], "logit_shift": [B, P, 1],
                 "logit_scale": [B, P, 1], "pred_boxes": [B, P, 4], "objectness_logits": [B, P]}
    with torch.no_grad():
        t1 = time.time()
        onnx_export(hf, (T(ids4), T(mask4), T(px1)), out_dir / "onnx/model.onnx",
                    ["input_ids", "attention_mask", "pixel_values"], hf_out,
                    {"input_ids": {0: Q}, "attention_mask": {0: Q}, "logits": {2: Q}}, hf_shapes)
        onnx_export(te, (T(ids4), T(mask4)), out_dir / "onnx/text_encoder.onnx",
                    ["input_ids", "attention_mask"], ["text_embeds"],
                    {"input_ids": {0: N}, "attention_mask": {0: N}, "text_embeds": {0: N}}, te_shapes)
        onnx_export(ie, (T(px2),), out_dir / "onnx/image_embedder.onnx", ["pixel_values"], ie_out,
                    {"pixel_values": {0: B}, **{k: {0: B} for k in ie_out}}, ie_shapes)
        export_s = time.time() - t1
        log(f"[{family}] exported 3 graphs in {export_s:.1f}s")

        diffs: dict[str, float] = {}
        s_hf = ort_session(out_dir / "onnx/model.onnx")
        s_te = ort_session(out_dir / "onnx/text_encoder.onnx")
        s_ie = ort_session(out_dir / "onnx/image_embedder.onnx")
        ids_all, mask_all = example_text(tok, TOKEN_SENTENCES)
        # hf layout, traced Q=4 and another Q.
        for ids, mask, px in [(ids4, mask4, px1), (ids_all[:7], mask_all[:7], random_pixels(gen, 1, S)),
                              (ids4[1:2], mask4[1:2], px1)]:
            want = hf(T(ids), T(mask), T(px))
            got = s_hf.run(hf_out, {"input_ids": ids, "attention_mask": mask, "pixel_values": px})
            for n, g, w in zip(hf_out, got, want):
                check_close(f"model.onnx {n} (Q={ids.shape[0]})", g, w.numpy(), diffs, f"model.onnx:{n}")
        # text encoder, N = 4, 1, 10; and equality with the embeddings the hf forward feeds the class head.
        for ids, mask in [(ids4, mask4), (ids4[:1], mask4[:1]), (ids_all, mask_all)]:
            want = te(T(ids), T(mask)).numpy()
            got = s_te.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0]
            check_close(f"text_encoder.onnx text_embeds (N={ids.shape[0]})", got, want, diffs, "text_encoder.onnx:text_embeds")
        full = model(input_ids=T(ids4), pixel_values=T(px1), attention_mask=T(mask4), return_dict=True)
        check_close("torch text_encoder vs hf forward text_embeds", te(T(ids4), T(mask4)).numpy(),
                    full.text_embeds[0].numpy(), diffs, "torch:text_encoder_vs_hf")
        # image embedder, B = 2 (traced), 1, 3.
        for px in [px2, px1, random_pixels(gen, 3, S)]:
            want = ie(T(px))
            got = s_ie.run(ie_out, {"pixel_values": px})
            for n, g, w in zip(ie_out, got, want):
                check_close(f"image_embedder.onnx {n} (B={px.shape[0]})", g, w.numpy(), diffs, f"image_embedder.onnx:{n}")
        check_close("torch image_embedder class_embeds vs hf class_embeds", ie(T(px1))[0].numpy(),
                    full.class_embeds.numpy(), diffs, "torch:class_embeds_vs_hf")
        # The Rust-side reconstruction from the split graphs (all ORT) vs the hf logits (torch and ORT).
        q = s_te.run(["text_embeds"], {"input_ids": ids4, "attention_mask": mask4})[0]
        ce, shift, scale, boxes = s_ie.run(ie_out, {"pixel_values": px1})[:4]
        qn = q / (np.linalg.norm(q, axis=-1, keepdims=True) + 1e-6)
        logits = (np.einsum("bpd,qd->bpq", ce, qn) + shift) * scale
        check_close("split reconstruction vs torch hf logits", logits, full.logits.numpy(), diffs, "split_vs_torch_logits")
        hf_ort = s_hf.run(hf_out, {"input_ids": ids4, "attention_mask": mask4, "pixel_values": px1})
        check_close("split reconstruction vs ORT model.onnx logits", logits, hf_ort[0], diffs, "split_vs_ort_logits")
        check_close("split pred_boxes vs ORT model.onnx pred_boxes", boxes, hf_ort[1], diffs, "split_vs_ort_boxes")
        if v2:
            check_close("split objectness vs ORT model.onnx objectness", s_ie.run(ie_out, {"pixel_values": px1})[4],
                        hf_ort[2], diffs, "split_vs_ort_objectness")

    stats = output_stats(full)
    log(f"[{family}] stats on random pixels: {json.dumps(stats)}")
    info = {
        "family": family,
        "mode": "tiny" if tiny else "full",
        "seed": seed,
        "versions": versions(),
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False, do_constant_folding=True)",
        "config_summary": {
            "model_class": type(model).__name__,
            "image_size": S,
            "patch_size": cfg.vision_config.patch_size,
            "num_patches": P,
            "query_dim": D,
            "text": {k: getattr(cfg.text_config, k) for k in (
                "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id", "hidden_act")},
            "vision": {k: getattr(cfg.vision_config, k) for k in (
                "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size", "hidden_act")},
            "projection_dim": cfg.projection_dim,
            "num_parameters": nparams,
            "head_init": "class_head.{dense0,logit_shift,logit_scale}, box_head.dense{0,1,2}"
            + (", objectness_head.dense{0,1,2}" if v2 else "")
            + ": weight ~ N(0, 1/fan_in), bias 0, except logit_shift.bias = -2",
        },
        "layouts": {
            "hf": {
                "file": "onnx/model.onnx",
                "inputs": {"input_ids": ["Q", MAX_LEN, "int64"], "attention_mask": ["Q", MAX_LEN, "int64"],
                           "pixel_values": [1, 3, S, S, "float32"]},
                "outputs": {"logits": [1, P, "Q", "float32"], "pred_boxes": [1, P, 4, "float32"],
                            **({"objectness_logits": [1, P, "float32"]} if v2 else {})},
            },
            "split": {
                "text_encoder": {
                    "file": "onnx/text_encoder.onnx",
                    "inputs": {"input_ids": ["N", MAX_LEN, "int64"], "attention_mask": ["N", MAX_LEN, "int64"]},
                    "outputs": {"text_embeds": ["N", D, "float32"]},
                },
                "image_embedder": {
                    "file": "onnx/image_embedder.onnx",
                    "inputs": {"pixel_values": ["B", 3, S, S, "float32"]},
                    "outputs": {"class_embeds": ["B", P, D, "float32"], "logit_shift": ["B", P, 1, "float32"],
                                "logit_scale": ["B", P, 1, "float32"], "pred_boxes": ["B", P, 4, "float32"],
                                **({"objectness_logits": ["B", P, "float32"]} if v2 else {})},
                },
                "logits": "(class_embeds . (t/(|t|+1e-6)) + logit_shift) * logit_scale",
            },
        },
        "max_abs_diff_onnx_vs_torch": {k: float(f"{v:.3e}") for k, v in sorted(diffs.items())},
    }
    with open(out_dir / "export_info.json", "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    total = time.time() - t0
    log(f"[{family}] done in {total:.1f}s -> {out_dir} ({dir_size(out_dir) / 1e6:.1f} MB)")
    return {"model": model, "cfg": cfg, "diffs": diffs, "stats": stats, "seconds": total, "export_seconds": export_s}


def output_stats(o) -> dict:
    lg = o.logits.float().numpy()
    bx = o.pred_boxes.float().numpy()
    sc = 1 / (1 + np.exp(-lg.max(-1)))
    st = {
        "logits_min": round(float(lg.min()), 4), "logits_max": round(float(lg.max()), 4),
        "logits_mean": round(float(lg.mean()), 4), "logits_std": round(float(lg.std()), 4),
        "score_min": round(float(sc.min()), 4), "score_median": round(float(np.median(sc)), 4),
        "score_max": round(float(sc.max()), 4),
        "box_min": round(float(bx.min()), 4), "box_max": round(float(bx.max()), 4),
        "box_wh_median": round(float(np.median(bx[..., 2:])), 4),
        "boxes_saturated(<1e-3 or >1-1e-3)": int(((bx < 1e-3) | (bx > 1 - 1e-3)).sum()),
    }
    if getattr(o, "objectness_logits", None) is not None:
        ob = o.objectness_logits.numpy()
        st.update(objectness_min=round(float(ob.min()), 4), objectness_max=round(float(ob.max()), 4))
    return st


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ["torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy", "scipy", "pillow",
                "scikit-image", "matplotlib", "open_clip_torch"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


# --------------------------------------------------------------------------------------------------------------
# Image processors and pure-numpy reference preprocessing (documents tests/golden/preprocess_note.md; the script
# asserts these reproduce transformers' output)
# --------------------------------------------------------------------------------------------------------------


def make_image_processor(family: str, size: int):
    from transformers import Owlv2ImageProcessor, OwlViTImageProcessor

    if family == "owlvit":
        return OwlViTImageProcessor(size={"height": size, "width": size}, crop_size={"height": size, "width": size})
    return Owlv2ImageProcessor(size={"height": size, "width": size})  # slow (numpy/scipy) processor


def _pil_bicubic_weight(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def _pil_resample_axis(img: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One pass of Pillow's 8-bit BICUBIC resample (libImaging/Resample.c), bit-exact."""
    in_size = img.shape[axis]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    a = np.moveaxis(img.astype(np.int64), axis, 0)
    out = np.empty((out_size,) + a.shape[1:], dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_pil_bicubic_weight((x + xmin - center + 0.5) / filterscale) for x in range(xmax)]
        ww = sum(k)
        k = [v / ww for v in k] if ww != 0.0 else k
        k = [int(-0.5 + v * (1 << 22)) if v < 0 else int(0.5 + v * (1 << 22)) for v in k]
        acc = np.full(a.shape[1:], 1 << 21, dtype=np.int64)
        for j in range(xmax):
            acc += a[xmin + j] * k[j]
        out[xx] = np.clip(acc >> 22, 0, 255)
    return np.moveaxis(out, 0, axis).astype(np.uint8)


def ref_preprocess_owlvit(rgb: np.ndarray, size: int, mean, std) -> np.ndarray:
    """uint8 HWC -> float32 CHW, identical to OwlViTImageProcessor (PIL bicubic resize to size x size)."""
    x = rgb
    if x.shape[1] != size:
        x = _pil_resample_axis(x, 1, size)  # horizontal pass first
    if x.shape[0] != size:
        x = _pil_resample_axis(x, 0, size)
    x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1)


def _mirror(i: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(i)
    period = 2 * n - 2
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def _gauss_axis(x: np.ndarray, axis: int, sigma: float) -> np.ndarray:
    r = int(4.0 * sigma + 0.5)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 / (sigma * sigma) * t * t)
    k /= k.sum()
    a = np.moveaxis(x, axis, 0).astype(np.float64)
    n = a.shape[0]
    out = np.zeros_like(a)
    for j in range(-r, r + 1):
        out += k[j + r] * a[_mirror(np.arange(n) + j, n)]
    return np.moveaxis(out, 0, axis).astype(np.float32)


def _linear_axis(x: np.ndarray, axis: int, out_n: int) -> np.ndarray:
    a = np.moveaxis(x, axis, 0).astype(np.float64)
    n = a.shape[0]
    c = (np.arange(out_n) + 0.5) * (n / out_n) - 0.5
    i0 = np.floor(c).astype(np.int64)
    t = (c - i0).reshape((-1,) + (1,) * (a.ndim - 1))
    out = a[_mirror(i0, n)] * (1 - t) + a[_mirror(i0 + 1, n)] * t
    return np.moveaxis(out, 0, axis)


def ref_preprocess_owlv2(rgb: np.ndarray, size: int, mean, std, pad_value: float = 0.5) -> np.ndarray:
    """uint8 HWC -> float32 CHW, identical (to ~1 ulp) to the slow Owlv2ImageProcessor."""
    x = (rgb.astype(np.float64) * (1 / 255)).astype(np.float32)
    h, w = x.shape[:2]
    m = max(h, w)
    p = np.full((m, m, x.shape[2]), pad_value, dtype=np.float32)
    p[:h, :w] = x
    sigma = max(0.0, (m / size - 1) / 2)
    g = p
    if sigma > 0:
        g = _gauss_axis(_gauss_axis(g, 0, sigma), 1, sigma)
    z = _linear_axis(_linear_axis(g, 0, size), 1, size).astype(np.float32)
    z = np.clip(z, p.min(), p.max())
    z = (z - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return z.transpose(2, 0, 1)


def owlv2_pad_value() -> float:
    """Measure the pad value of the slow Owlv2ImageProcessor (0.5 grey in transformers 4.x)."""
    from transformers import Owlv2ImageProcessor

    proc = Owlv2ImageProcessor(do_resize=False, do_normalize=False)
    img = np.zeros((2, 1, 3), dtype=np.uint8)  # H=2, W=1 -> padded to 2x2 on the right
    pv = proc(images=img, return_tensors="np")["pixel_values"][0]
    assert pv.shape == (3, 2, 2), pv.shape
    return float(pv[0, 0, 1])


# --------------------------------------------------------------------------------------------------------------
# Fixtures and goldens
# --------------------------------------------------------------------------------------------------------------


def write_fixtures(dst: Path) -> dict[str, Path]:
    import matplotlib
    import skimage
    from PIL import Image

    src = {
        "astronaut": Path(skimage.__file__).parent / "data" / "astronaut.png",
        "coffee": Path(skimage.__file__).parent / "data" / "coffee.png",
        "grace_hopper": Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg",
    }
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, p in src.items():
        arr = np.asarray(Image.open(p).convert("RGB"))
        o = dst / f"{name}.png"
        # Decoded pixels re-encoded as plain 8-bit RGB PNG (drops ICC/text chunks). For grace_hopper this is
        # Pillow's decode of the JPEG, which the tests hold lookout's JPEG decoder to.
        Image.fromarray(arr, mode="RGB").save(o, format="PNG")
        back = np.asarray(Image.open(o))
        assert back.dtype == np.uint8 and back.shape == arr.shape and np.array_equal(back, arr)
        out[name] = o
        log(f"  fixture {o.relative_to(REPO)} {arr.shape[1]}x{arr.shape[0]}")
    # The JPEG itself too, so that lookout's JPEG decoder is held to Pillow's (libjpeg-turbo's) pixels.
    jpg = dst / GRACE_HOPPER_JPG
    shutil.copyfile(src["grace_hopper"], jpg)
    assert np.array_equal(np.asarray(Image.open(jpg).convert("RGB")), np.asarray(Image.open(out["grace_hopper"])))
    log(f"  fixture {jpg.relative_to(REPO)} (matplotlib's file; its Pillow decode is grace_hopper.png)")
    return out


def _cmyk_with_black(rgb: np.ndarray) -> np.ndarray:
    """RGB -> CMYK with full undercolour removal (k = 255 - max), so the black plane carries the image.

    Pillow's own RGB -> CMYK leaves k = 0, which would leave the K half of the CMYK -> RGB formula untested.
    """
    rgb = rgb.astype(np.int32)
    k = 255 - rgb.max(axis=2)
    denom = np.maximum(255 - k, 1)
    cmy = ((255 - k)[..., None] - rgb) * 255 // denom[..., None]
    return np.dstack([cmy, k]).astype(np.uint8)


def write_jpeg_fixtures(dst: Path) -> list[Path]:
    """Small JPEGs that cover what a decoder can get wrong: each chroma subsampling, progressive, odd sizes
    (partial MCUs at the right and bottom edges), grayscale and CMYK (Adobe polarity, as Pillow writes it).

    They are crops of the real photos, encoded by Pillow (libjpeg-turbo), so the bytes depend on the Pillow
    version; tests/golden/jpeg/decode.json is written from the same files in the same run.
    """
    from PIL import Image

    photo = np.asarray(Image.open(REPO / "tests" / "fixtures" / "astronaut.png").convert("RGB"))
    coffee = np.asarray(Image.open(REPO / "tests" / "fixtures" / "coffee.png").convert("RGB"))
    d = dst / "jpeg"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    specs = [
        # name, pixels, mode, save options
        ("444.jpg", photo[40:107, 180:263], "RGB", dict(quality=90, subsampling=0)),
        ("422.jpg", photo[101:146, 203:280], "RGB", dict(quality=85, subsampling=1)),
        ("420-progressive.jpg", coffee[150:211, 280:357], "RGB", dict(quality=80, subsampling=2, progressive=True)),
        ("gray.jpg", np.asarray(Image.fromarray(coffee[90:145, 120:189]).convert("L")), "L", dict(quality=90)),
        ("cmyk.jpg", _cmyk_with_black(photo[300:347, 100:161]), "CMYK", dict(quality=90)),
    ]
    out = []
    for name, arr, mode, opts in specs:
        p = d / name
        Image.fromarray(np.ascontiguousarray(arr), mode=mode).save(p, format="JPEG", **opts)
        back = Image.open(p)
        assert back.mode == mode, (name, back.mode)
        out.append(p)
        log(f"  fixture {p.relative_to(REPO)} {back.size[0]}x{back.size[1]} {mode} {opts}")
    return out


def write_jpeg_golden(jpegs: list[Path], golden: Path):
    """tests/golden/jpeg/decode.json: what transformers gets from each JPEG, `Image.open(f).convert("RGB")`."""
    import PIL
    from PIL import Image, JpegImagePlugin
    from PIL import features

    d = golden / "jpeg"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    fixtures = REPO / "tests" / "fixtures"
    recs = []
    for p in jpegs:
        im = Image.open(p)
        mode, sampling, progressive = im.mode, JpegImagePlugin.get_sampling(im), bool(im.info.get("progressive"))
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        h, w = rgb.shape[:2]
        # A few pixels to say where a mismatch is: the corners (edge MCUs) and the centre.
        at = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2)]
        recs.append({
            "file": p.relative_to(fixtures).as_posix(),
            "width": w,
            "height": h,
            "jpeg_mode": mode,
            "subsampling": {-1: None, 0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(sampling, str(sampling)),
            "progressive": progressive,
            "rgb_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
            "pixels": [{"x": x, "y": y, "rgb": [int(v) for v in rgb[y, x]]} for x, y in at],
        })
    write_json(d / "decode.json", {
        "note": "Pillow's decode of each JPEG fixture, as transformers' load_image gets it: "
        "Image.open(file).convert('RGB') (libjpeg-turbo: accurate integer IDCT, fancy chroma upsampling; CMYK "
        "read with Adobe polarity and converted by Pillow's cmyk2rgb). rgb_sha256 is over the packed RGB rows.",
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "images": recs,
    })
    log(f"  golden {(d / 'decode.json').relative_to(REPO)}: {len(recs)} JPEGs, Pillow {PIL.__version__}, "
        f"libjpeg-turbo {features.version('libjpeg_turbo')}")


def pick_threshold(scores_per_image: list[np.ndarray], lo: int = 3, hi: int = 30) -> tuple[float, float]:
    """Threshold (multiple of 0.001) keeping lo..hi boxes in every image, as far as possible from any score."""
    best = None
    for t in np.round(np.arange(0.001, 1.0, 0.001), 3):
        counts = [int((s > t).sum()) for s in scores_per_image]
        if all(lo <= c <= hi for c in counts):
            margin = min(float(np.min(np.abs(s - t))) for s in scores_per_image)
            if best is None or margin > best[1] + 1e-12:
                best = (float(t), margin)
    if best is None:
        raise SystemExit(f"no threshold keeps {lo}..{hi} boxes in every image")
    return best


def save_npy(path: Path, arr: np.ndarray, dtype):
    a = np.ascontiguousarray(np.asarray(arr).astype(np.dtype(dtype).newbyteorder("<")))
    np.save(path, a)


def write_json(path: Path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_goldens(families: dict, fixtures: dict[str, Path], clip_tok, tiny_tok, golden: Path, seed: int):
    import torch
    from PIL import Image, features
    from transformers import Owlv2Processor, OwlViTProcessor

    golden.mkdir(parents=True, exist_ok=True)
    write_json(golden / "clip_tokens.json", token_records(clip_tok))
    pad_value = owlv2_pad_value()
    log(f"  OWLv2 pad value (measured): {pad_value}")
    summary = {}
    for family, fam in families.items():
        model, cfg = fam["model"], fam["cfg"]
        S = cfg.vision_config.image_size
        fdir = golden / family
        if fdir.exists():
            shutil.rmtree(fdir)
        fdir.mkdir(parents=True)
        write_json(fdir / "tokens.json", token_records(tiny_tok))
        ip = make_image_processor(family, S)
        proc = (OwlViTProcessor if family == "owlvit" else Owlv2Processor)(image_processor=ip, tokenizer=tiny_tok)
        assert type(proc.image_processor).__name__ in ("OwlViTImageProcessor", "Owlv2ImageProcessor")
        runs = {}
        for name in IMAGES:
            img = Image.open(fixtures[name]).convert("RGB")
            W, H = img.size
            inputs = proc(text=QUERIES, images=img, return_tensors="np")
            pv = inputs["pixel_values"].astype(np.float32)
            ids = inputs["input_ids"].astype(np.int64)
            mask = inputs["attention_mask"].astype(np.int64)
            assert pv.shape == (1, 3, S, S) and ids.shape == (len(QUERIES), MAX_LEN), (pv.shape, ids.shape)
            # The pure-numpy reference must match the transformers processor.
            rgb = np.asarray(img)
            if family == "owlvit":
                ref = ref_preprocess_owlvit(rgb, S, ip.image_mean, ip.image_std)
            else:
                ref = ref_preprocess_owlv2(rgb, S, ip.image_mean, ip.image_std, pad_value)
            rd = float(np.abs(ref - pv[0]).max())
            assert rd < 1e-5, (family, name, rd)
            if name == "grace_hopper":
                # The parity test holds grace_hopper.jpg, decoded by lookout, to these same goldens.
                jpg = Image.open(fixtures[name].parent / GRACE_HOPPER_JPG).convert("RGB")
                pv_jpg = proc(text=QUERIES, images=jpg, return_tensors="np")["pixel_values"].astype(np.float32)
                assert np.array_equal(pv_jpg, pv), (family, "grace_hopper.jpg and .png give different pixel_values")
            with torch.no_grad():
                out = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pv),
                            attention_mask=torch.from_numpy(mask), return_dict=True)
            runs[name] = dict(W=W, H=H, pv=pv, ids=ids, mask=mask, out=out, ref_diff=rd)
        scores = [torch.sigmoid(r["out"].logits[0].max(-1).values).numpy() for r in runs.values()]
        T, margin = pick_threshold(scores)
        log(f"  [{family}] threshold {T} (closest score is {margin:.2e} away)")
        fam_summary = {"threshold": T, "margin": margin, "images": {}}
        for name, r in runs.items():
            d = fdir / name
            d.mkdir()
            out = r["out"]
            save_npy(d / "pixel_values.npy", r["pv"], np.float32)
            save_npy(d / "input_ids.npy", r["ids"], np.int64)
            save_npy(d / "attention_mask.npy", r["mask"], np.int64)
            save_npy(d / "logits.npy", out.logits.numpy(), np.float32)
            save_npy(d / "pred_boxes.npy", out.pred_boxes.numpy(), np.float32)
            if family == "owlv2":
                save_npy(d / "objectness_logits.npy", out.objectness_logits.numpy(), np.float32)
            res = proc.post_process_grounded_object_detection(
                outputs=out, threshold=T, target_sizes=[(r["H"], r["W"])], text_labels=[QUERIES]
            )[0]
            sc = torch.sigmoid(out.logits[0].max(-1).values)
            keep = torch.nonzero(sc > T).flatten().tolist()
            assert len(keep) == len(res["scores"])
            results = [
                {"index": int(p), "label": int(l), "text_label": tl, "score": float(s), "box": [float(v) for v in b]}
                for p, l, tl, s, b in zip(keep, res["labels"].tolist(), res["text_labels"], res["scores"].tolist(),
                                          res["boxes"].tolist())
            ]
            scale_note = (
                "boxes = center_to_corners(pred_boxes) * [W, H, W, H]"
                if family == "owlvit"
                else "boxes = center_to_corners(pred_boxes) * [M, M, M, M] with M = max(W, H): the image was padded "
                "bottom/right to an MxM square before resizing, so coordinates are relative to the padded square "
                "(transformers 4.57 Owlv2ImageProcessor._scale_boxes); boxes may extend past W/H and are not clipped"
            )
            post = {
                "image": f"{name}.png",
                "width": r["W"],
                "height": r["H"],
                "queries": QUERIES,
                "threshold": T,
                "results": results,
                "note": "post_process_grounded_object_detection(outputs, threshold, target_sizes=[(H, W)]): "
                "score = sigmoid(max_q logits[p, q]), label = argmax_q (first max), kept if score > threshold "
                "(strict), in patch order (index = patch index p, row-major over the patch grid), no NMS, no "
                "clipping; " + scale_note + ".",
            }
            write_json(d / "post.json", post)
            fam_summary["images"][name] = {"kept": len(results), "preprocess_ref_max_diff": r["ref_diff"]}
            log(f"  [{family}/{name}] {r['W']}x{r['H']} kept {len(results)} boxes; numpy-reference preprocess "
                f"max|diff| {r['ref_diff']:.2e}; logits [{out.logits.min():.3f}, {out.logits.max():.3f}] "
                f"boxes [{out.pred_boxes.min():.4f}, {out.pred_boxes.max():.4f}]")
        summary[family] = fam_summary
    vers = versions()
    lines = [
        "Goldens generated by models/export_owl.py (seeded random-weight models, see models/tiny/*/export_info.json).",
        "",
        *[f"{k}=={v}" for k, v in vers.items()],
        f"seed={seed}",
        f"onnx_opset={OPSET}",
        "",
        f"owlv2_pad_value={pad_value}",
        "  Owlv2ImageProcessor (slow, numpy/scipy) pads bottom/right to a square with constant 0.5 AFTER rescaling "
        "to [0,1]",
        "  (i.e. grey 127.5/255), before resize and normalisation. transformers 5.x pads with 0.0 instead; these "
        "goldens use 0.5.",
        "owlv2_image_processor=Owlv2ImageProcessor (slow; use_fast=False). Owlv2ImageProcessorFast gives different "
        "pixels.",
        "owlvit_image_processor=OwlViTImageProcessor (PIL bicubic resize)",
        "tokenizer=CLIPTokenizerFast (tokenizer.json), model_max_length=16, pad '!'=0",
        f"libjpeg_turbo=={features.version('libjpeg_turbo')} (inside the pillow wheel)",
        "  grace_hopper.png is Pillow's decode of tests/fixtures/grace_hopper.jpg: the processors give the same "
        "pixel_values",
        "  for both, bit for bit (checked here), so grace_hopper/ is the golden of the JPEG too.",
        "",
        "thresholds:",
        *[f"  {f}: {s['threshold']} (nearest score {s['margin']:.2e} away); kept "
          + ", ".join(f"{i}={v['kept']}" for i, v in s["images"].items()) for f, s in summary.items()],
    ]
    (golden / "VERSIONS.txt").write_text("\n".join(lines) + "\n")
    return summary


# --------------------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true",
                    help="full-size architectures (OWL-ViT B/32 @768, OWLv2 B/16 @960) with the real 49408-token "
                    "tokenizer into models/full/ (gitignored, large)")
    ap.add_argument("--only", choices=sorted(FAMILIES), help="export only this family")
    ap.add_argument("--out", type=Path, help="model root directory (default models/tiny or models/full)")
    ap.add_argument("--seed", type=int, default=SEED)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--assets", dest="assets", action="store_true", default=None,
                   help="(re)write models/clip-tokenizer, tests/fixtures and tests/golden (default: only for a tiny "
                   "run of both families without --out)")
    g.add_argument("--no-assets", dest="assets", action="store_false")
    args = ap.parse_args(argv)

    import torch

    import quantize_int8  # models/ is on the path when this runs as a script

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tiny = not args.full
    fams = [args.only] if args.only else list(FAMILIES)
    assets = args.assets if args.assets is not None else (tiny and args.out is None and args.only is None)
    if assets and not tiny:
        raise SystemExit("--assets needs the tiny models (goldens come from them)")
    if assets and args.only:
        raise SystemExit("--assets needs both families")
    root = args.out or (REPO / "models" / ("tiny" if tiny else "full"))
    log(f"versions: {json.dumps(versions())}")
    t_start = time.time()

    clip_tok = build_tokenizer(None)
    tok = build_tokenizer(TINY_MERGES) if tiny else clip_tok
    log(f"tokenizer: vocab {len(tok)} bos {tok.bos_token_id} eos {tok.eos_token_id} pad {tok.pad_token_id}")

    results = {}
    for fam in fams:
        d = root / (FAMILIES[fam]["tiny_dir"] if tiny else FAMILIES[fam]["full_dir"])
        size = (96 if fam == "owlvit" else 128) if tiny else (768 if fam == "owlvit" else 960)
        ip = make_image_processor(fam, size)
        results[fam] = export_family(fam, d, tok, tiny, args.seed, ip)
        # int8 variants for `--precision int8`: onnx/image_embedder_int8.onnx and onnx/model_quantized.onnx.
        quantize_int8.quantize_dir(d, quantize_int8.default_layouts(d))

    if assets:
        log("writing assets")
        save_tokenizer(clip_tok, REPO / "models" / "clip-tokenizer")
        fixtures = write_fixtures(REPO / "tests" / "fixtures")
        jpegs = [REPO / "tests" / "fixtures" / GRACE_HOPPER_JPG] + write_jpeg_fixtures(REPO / "tests" / "fixtures")
        write_goldens(results, fixtures, clip_tok, tok, REPO / "tests" / "golden", args.seed)
        write_jpeg_golden(jpegs, REPO / "tests" / "golden")

    log("\nsummary")
    for fam, r in results.items():
        log(f"  {fam}: {r['seconds']:.1f}s (export {r['export_seconds']:.1f}s); worst ONNX-vs-torch diff "
            f"{max(r['diffs'].values()):.2e}")
    log(f"total {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()
