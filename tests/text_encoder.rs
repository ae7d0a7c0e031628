//! `Detector::text_encoder`: the encoder `watch --http` changes queries with shares the detector's tokenizer and
//! text graph (no second copy of the model), runs on another thread while the detector detects, and gives the
//! query set the detector's own `encode` gives: the same detections, for every family and layout.

mod common;

use common::{fixture, tiny_model};
use lookout::infer::postprocess::Selection;
use lookout::infer::{Image, Layout, ModelDir, SessionOptions};

#[test]
fn the_text_encoder_encodes_on_another_thread_as_the_detector_does() {
    let img = lookout::imageio::load_rgb(&fixture("coffee.png")).unwrap();
    let texts: Vec<String> = ["a cup of coffee", "a saucer", "a spoon on the table"].map(String::from).to_vec();
    let selection = Selection { threshold: Some(0.0), top_k: Some(5), ..Default::default() };
    for (model, layout) in [
        ("owlvit", Layout::Split),
        ("owlvit", Layout::Hf),
        ("owlv2", Layout::Split),
        ("grounding-dino", Layout::Split),
        ("grounding-dino", Layout::Hf),
        ("mm-grounding-dino", Layout::Split),
    ] {
        let dir = ModelDir::open_with(&tiny_model(model), Some(layout)).unwrap();
        let mut detector = lookout::infer::load(dir, &SessionOptions::default()).unwrap();
        let own = detector.encode(&texts).unwrap();
        let mut encoder = detector.text_encoder();
        // Encode on another thread while this one detects (the text graph is shared, behind its lock).
        let thread_texts = texts.clone();
        let handle = std::thread::spawn(move || {
            let sets: Vec<_> = (0..3).map(|_| encoder.encode(&thread_texts).unwrap()).collect();
            sets
        });
        let expected = detector.detect(&[Image::Rgb(&img)], &own, &selection).unwrap().remove(0).unwrap();
        let sets = handle.join().expect("the encoder thread");
        assert!(!expected.is_empty(), "{model} {layout}: nothing to compare");
        for set in &sets {
            assert_eq!(set.texts(), own.texts());
            let got = detector.detect(&[Image::Rgb(&img)], set, &selection).unwrap().remove(0).unwrap();
            assert_eq!(got, expected, "{model} {layout}: detections from the shared encoder's queries");
        }
    }
}
