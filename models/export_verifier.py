#!/usr/bin/env python3
"""Builds lookout's verifier test models (issue 13).

`--brightness`: a deterministic verifier whose scores follow a property a test controls: the mean brightness of
the event's crops. It is not a video-text model: its "prompts" are numbers (target brightnesses, 0 = black,
1 = white), and the logit of prompt p is -SCALE * |mean(pixels) - target_p|, so the prompt nearest to the
crops' mean brightness wins the softmax. Written with the `onnx` package alone (no weights, a few hundred bytes).

    /work/venv/bin/python models/export_verifier.py --brightness --out models/tiny/verifier-brightness

Graph `onnx/video.onnx` (opset 17):
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
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not a.brightness:
        p.error("give --brightness")
    brightness(a.out)


if __name__ == "__main__":
    main()
