"""Tests of the benchmark harness's own arithmetic and option handling (stdlib only, no lookout run):

    python3 -m unittest discover -s models -p 'test_*.py'
"""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pairs as bp  # noqa: E402
import bench_watch as bw  # noqa: E402

METRICS = """# HELP lookout_source_frames_inferred_total Frames run through the model
# TYPE lookout_source_frames_inferred_total counter
lookout_source_frames_inferred_total{source="cam0"} 12
lookout_source_frames_inferred_total{source="cam1"} 10
lookout_source_frames_skipped_motion_total{source="cam0"} 30
lookout_inference_seconds_sum{device="cpu",model="owlvit"} 4.5
lookout_inference_seconds_count{device="cpu",model="owlvit"} 11
lookout_resident_memory_bytes 1.2e9
"""

SWITCH_HELP = """Inference:
      --motion                Skip inference on frames where nothing moves
      --no-motion             Infer every frame due, moving or not
      --precision <P>         fp32 or int8 [possible values: fp32, int8]
"""

VALUE_HELP = """Inference:
      --motion <ON>  The motion gate [default: on for live sources] [possible values: true, false]
"""


class Metrics(unittest.TestCase):
    def test_per_source_and_totals(self):
        m = bp.parse_metrics(METRICS)
        self.assertEqual(bp.per_source(m, "lookout_source_frames_inferred_total"), {"cam0": 12, "cam1": 10})
        self.assertEqual(bp.total(m, "lookout_source_frames_inferred_total"), 22)
        self.assertEqual(bp.total(m, "lookout_inference_seconds_count"), 11)
        self.assertEqual(bp.total(m, "lookout_resident_memory_bytes"), 1.2e9)

    def test_the_gates_counter_is_found_by_name(self):
        m = bp.parse_metrics(METRICS)
        self.assertEqual(bp.skipped_names(m), ["lookout_source_frames_skipped_motion_total"])
        self.assertEqual(bp.skipped_names(bp.parse_metrics("lookout_source_frames_dropped_total{source=\"a\"} 3")),
                         [])


class Pairs(unittest.TestCase):
    def test_the_order_alternates_from_round_to_round(self):
        self.assertEqual(bp.alternate(["alone", "plain", "annotate"], 3),
                         [["alone", "plain", "annotate"], ["annotate", "plain", "alone"],
                          ["alone", "plain", "annotate"]])

    def test_median_and_spread(self):
        s = bp.spread([1.036, 0.989, 0.959, 1.001])
        self.assertAlmostEqual(s["median"], 0.995)
        self.assertAlmostEqual(s["spread"], 1.036 - 0.959)
        self.assertEqual(s["n"], 4)
        self.assertEqual(bp.spread([float("nan")])["n"], 0)


class Options(unittest.TestCase):
    def test_a_switch_and_its_negation(self):
        self.assertEqual(bw.option_value(SWITCH_HELP, "--motion", True), ["--motion"])
        self.assertEqual(bw.option_value(SWITCH_HELP, "--motion", False), ["--no-motion"])

    def test_an_option_with_values(self):
        self.assertEqual(bw.option_value(VALUE_HELP, "--motion", True), ["--motion", "true"])
        self.assertEqual(bw.option_value(VALUE_HELP, "--motion", False), ["--motion", "false"])

    def test_variants_absent_from_the_build_are_reported(self):
        v = {x["name"]: x for x in bw.camera_variants(Path("m"), "", {"--fps"})}
        self.assertIsNone(v["fp32"]["unavailable"])
        self.assertEqual(v["fp32"]["argv"], [])
        self.assertIn("not available in this build", v["int8"]["unavailable"])
        self.assertIn("--motion", v["fp32 + gate"]["unavailable"])
        v = {x["name"]: x for x in bw.camera_variants(Path("m"), SWITCH_HELP,
                                                         bp.watch_flags_from_help(SWITCH_HELP))}
        self.assertEqual(v["int8 + gate"]["argv"], ["--precision", "int8", "--motion"])
        self.assertEqual(v["fp32"]["argv"], ["--precision", "fp32", "--no-motion"])


class Kept(unittest.TestCase):
    def test_a_camera_handled_every_second_is_kept(self):
        self.assertTrue(bw.kept(1.0, [10, 9, 10, 10], 50.0, 0, None))

    def test_too_slow_on_the_whole_or_in_one_stretch_or_late_is_not(self):
        self.assertFalse(bw.kept(0.65, [6, 7, 6, 7], 100.0, 0, None))
        self.assertFalse(bw.kept(0.92, [10, 10, 10, 7], 50.0, 0, None))  # starved for 10 s
        self.assertFalse(bw.kept(1.0, [10, 10, 10, 10], 1500.0, 0, None))  # lagging
        self.assertFalse(bw.kept(1.0, [10, 10, 10, 10], 50.0, 1, None))  # reconnected
        self.assertFalse(bw.kept(1.0, [], 50.0, 0, None))  # no full bin: nothing shown


if __name__ == "__main__":
    unittest.main()
