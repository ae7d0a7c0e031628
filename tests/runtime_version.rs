//! The ONNX Runtime version floor, through the real binary: a library older than the floor is refused at start with
//! one line that names both versions and what to do.
//!
//! The old library is a stand-in compiled here with the system C compiler (the one Rust links with): it exports only
//! `OrtGetApiBase`, whose `GetVersionString` reports an old release and whose `GetApi` returns nothing, so anything
//! that used it past the version check would fail loudly rather than pass.

mod common;

use std::path::Path;
use std::process::Command;

const FAKE_ORT_C: &str = r#"
#include <stddef.h>
typedef struct {
    const void *(*GetApi)(unsigned version);
    const char *(*GetVersionString)(void);
} OrtApiBase;
static const void *get_api(unsigned version) { (void)version; return NULL; }
static const char *version_string(void) { return VERSION; }
static const OrtApiBase base = { get_api, version_string };
const OrtApiBase *OrtGetApiBase(void) { return &base; }
"#;

/// Builds `dir/libonnxruntime.so` reporting `version`.
fn fake_onnxruntime(dir: &Path, version: &str) -> std::path::PathBuf {
    let src = dir.join("fake_ort.c");
    std::fs::write(&src, FAKE_ORT_C).unwrap();
    let lib = dir.join("libonnxruntime.so");
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(format!("-DVERSION=\"{version}\""))
        .arg(&src)
        .output()
        .expect("run the C compiler (cc, or $CC) to build a stand-in ONNX Runtime");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

#[test]
fn an_onnx_runtime_older_than_the_floor_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = fake_onnxruntime(tmp.path(), "1.16.3");

    let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("ORT_DYLIB_PATH", &lib)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "error")
        .args(["locate", "--no-images"])
        .arg(common::fixture("coffee.png"))
        .arg("-m")
        .arg(common::tiny_model("owlvit"))
        .args(["-q", "a cup"])
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(line.contains(&lib.display().to_string()), "names the library: {line}");
    assert!(line.contains("version 1.16.3"), "names the loaded version: {line}");
    assert!(line.contains("needs 1.17 or newer"), "names the required version: {line}");
    assert!(line.contains("ORT_DYLIB_PATH") && line.contains("make deps"), "says what to do: {line}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
