#!/usr/bin/env python3
"""Builds lookout's verifier test models (issue 13).

`--brightness`: a deterministic verifier whose scores follow a property a test controls: the mean brightness of
the event's crops. It is not a video-text model: its "prompts" are numbers (target brightnesses, 0 = black,
1 = white), and the logit of prompt p is -SCALE * |mean(pixels) - target_p|, so the prompt nearest to the
crops' mean brightness wins the softmax. Written with the `onnx` package alone (no weights, a few hundred bytes).

    /work/venv/bin/python models/export_verifier.py --brightness --out models/tiny/verifier-brightness

`--xclip`: a seeded random-weight tiny X-CLIP (`XCLIPModel` from an `XCLIPConfig`: 8 frames of 32x32, towers of
width 32), with OWL's tiny CLIP tokenizer (models/tiny/owlvit: end-of-text is the largest id, because X-CLIP's
text pooling takes the argmax id) set up as the Hub's (context 77, padded with end-of-text), and goldens on real frames of tests/fixtures/bikes.mp4
(decoded with gst-launch-1.0 the way lookout's tests decode: decodebin ! videoconvert ! RGB).

    /work/venv/bin/python models/export_verifier.py --xclip --out models/tiny/xclip --golden tests/golden/xclip
    /work/venv/bin/python models/export_verifier.py --xclip --full --out models/full/xclip-b32   # for the benchmark
    /work/venv/bin/python models/export_verifier.py --xclip --from-pretrained microsoft/xclip-base-patch32 \
        --out models/full/xclip-base-patch32      # on a machine with network (the Hub has no X-CLIP ONNX)

The graphs are split so that text is encoded once per prompt set (opset 17):
  onnx/text_encoder.onnx  input_ids, attention_mask int64 [P, 77] -> text_embeds float [P, D]
                          (XCLIPModel.get_text_features)
  onnx/video.onnx         pixel_values float [1, T, 3, H, W], text_embeds float [P, D] -> logits_per_video [1, P]
                          (vision tower, frame-mixing transformer, the prompt generator, which needs the video
                          features, and the scaled cosine similarity: XCLIPModel.forward from text_embeds on)

`--clip`: a seeded random-weight tiny CLIP (`CLIPModel` from a `CLIPConfig`: the openai/clip-vit-base-patch32
architecture with towers of width 32 and 32x32 images), with the same tiny tokenizer set up the same way, and
goldens on real frames of bikes.mp4, the golden photos and a crop (see models/export_clip.py for the graphs):

    /work/venv/bin/python models/export_verifier.py --clip --out models/tiny/clip --golden tests/golden/clip
    /work/venv/bin/python models/export_verifier.py --clip --from-pretrained openai/clip-vit-base-patch32 \
        --out models/full/clip-vit-base-patch32   # on a machine with network; or fetch Xenova's ONNX export

Graph `onnx/video.onnx` of --brightness (opset 17):
  pixel_values  float [1, T, 3, H, W]  the crops, RGB scaled to 0..1 (T and H, W from config.json)
  text_embeds   float [P]              the prompts' targets, parsed by lookout from the prompt texts
  -> logits_per_video float [1, P]
"""

import argparse
import json
import os

import onnx
from onnx import TensorProto, helper

SCALE = 10.0
IMAGE_SIZE = 32
NUM_FRAMES = 8


def brightness(out_dir: str) -> None:
    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, "frames", 3, "height", "width"])
    targets = helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["prompts"])
    logits = helper.make_tensor_value_info("logits_per_video", TensorProto.FLOAT, [1, "prompts"])
    nodes = [
        # The mean over frames, channels and pixels: [1, 1].
        helper.make_node("ReduceMean", ["pixel_values"], ["mean"], axes=[1, 2, 3, 4], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one_axis"], ["mean2"]),
        # [1, 1] - [P] broadcasts to [1, P].
        helper.make_node("Sub", ["mean2", "text_embeds"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["dist"]),
        helper.make_node("Mul", ["dist", "neg_scale"], ["logits_per_video"]),
    ]
    inits = [
        helper.make_tensor("one_axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("neg_scale", TensorProto.FLOAT, [], [-SCALE]),
    ]
    graph = helper.make_graph(nodes, "brightness_verifier", [pixels, targets], [logits], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lookout")
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.join(out_dir, "onnx"), exist_ok=True)
    onnx.save(model, os.path.join(out_dir, "onnx", "video.onnx"))
    config = {
        "model_type": "brightness",
        "test_model": True,
        "image_size": IMAGE_SIZE,
        "num_frames": NUM_FRAMES,
        "logit_scale": SCALE,
        "note": "test verifier: prompts are target brightnesses (0..1); see models/export_verifier.py",
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--brightness", action="store_true", help="the deterministic brightness verifier")
    p.add_argument("--xclip", action="store_true", help="the tiny random-weight X-CLIP (or --from-pretrained)")
    p.add_argument("--clip", action="store_true", help="the tiny random-weight CLIP (or --from-pretrained)")
    p.add_argument("--full", action="store_true",
                   help="with --xclip: full-size X-CLIP B/32 with random weights (models/full/, never committed)")
    p.add_argument("--from-pretrained", metavar="HUB_ID", help="with --xclip or --clip: real weights (needs network)")
    p.add_argument("--golden", help="with --xclip or --clip: write goldens on bikes.mp4 into this directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.brightness + a.xclip + a.clip != 1:
        p.error("give one of --brightness, --xclip, --clip")
    if a.brightness:
        brightness(a.out)
    elif a.clip:
        import export_clip

        export_clip.export(a.out, a.golden, a.seed, a.from_pretrained)
    else:
        import export_xclip

        export_xclip.export(a.out, a.golden, a.seed, a.from_pretrained, a.full)


if __name__ == "__main__":
    main()
