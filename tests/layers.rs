//! The layers run one way (DESIGN.md): `source/`, `infer/` and `track/` never import `sink/`, `watch/` or `cli/`,
//! and `infer/` never imports `source/`.
//!
//! This reads the source files and resolves every `crate::…` and `super::…` path they name (in `use` lines and
//! in code) to the top-level module it lands in. Comments are skipped, so a doc link or a note may name any
//! module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// (layer, modules it must never import).
const RULES: &[(&str, &[&str])] = &[
    ("source", &["sink", "watch", "cli"]),
    ("infer", &["sink", "watch", "cli", "source"]),
    ("track", &["sink", "watch", "cli"]),
    // The evaluation reads events.jsonl as plain JSON, so a change to the sink's types cannot break it.
    ("eval", &["source", "sink", "watch", "cli"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `src/sink/clips/mod.rs` → `["sink", "clips"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without its comments (line comments, and block comments, not nested).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if rest.starts_with('"') {
            // A string literal: keep it out too, so that a message naming a module is not an import.
            let mut chars = rest[1..].char_indices();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = i + 2;
                        break;
                    }
                    _ => {}
                }
            }
            out.push_str("\"\"");
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The top-level modules that `code` (of the module at `module`) names through `crate::` or `super::` paths,
/// grouped `use crate::{a, b::c}` lists included.
fn imported_top_modules(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes: Vec<char> = code.chars().collect();
    let text: String = bytes.iter().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != ':';
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            // Walk the `super::` chain from the file's own module.
            let mut base: Vec<String> = module.to_vec();
            let mut j = i;
            if rest.starts_with("crate::") {
                base.clear();
                j += 7;
            } else {
                while text[char_offset(&bytes, j)..].starts_with("super::") {
                    base.pop();
                    j += 7;
                }
            }
            if bytes.get(j) == Some(&'{') {
                // A grouped list: each entry's first segment.
                let close = (j..bytes.len()).find(|&k| bytes[k] == '}').unwrap_or(bytes.len());
                let inner: String = bytes[j + 1..close].iter().collect();
                for entry in inner.split(',') {
                    let first: String = entry.trim().chars().take_while(|&c| is_ident(c)).collect();
                    if !first.is_empty() {
                        found.insert(top_of(&base, &first));
                    }
                }
                i = close;
            } else {
                let first: String = bytes[j..].iter().take_while(|&&c| is_ident(c)).collect();
                if !first.is_empty() {
                    found.insert(top_of(&base, &first));
                }
                i = j;
            }
        }
        i += 1;
    }
    found
}

fn char_offset(chars: &[char], index: usize) -> usize {
    chars[..index].iter().map(|c| c.len_utf8()).sum()
}

/// The top-level module of `base::first`.
fn top_of(base: &[String], first: &str) -> String {
    base.first().cloned().unwrap_or_else(|| first.to_string())
}

#[test]
fn layers_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(layer) = module.first() else { continue };
        let Some((_, forbidden)) = RULES.iter().find(|(l, _)| l == layer) else { continue };
        let code = without_comments(&std::fs::read_to_string(file).unwrap());
        for top in imported_top_modules(&code, &module) {
            if forbidden.contains(&top.as_str()) {
                violations.push(format!("{} ({layer}/) imports {top}/", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(violations.is_empty(), "layers must run one way (see DESIGN.md):\n  {}", violations.join("\n  "));
}

#[test]
fn track_depends_only_on_geometry() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("track"), &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = without_comments(&std::fs::read_to_string(file).unwrap());
        for top in imported_top_modules(&code, &module) {
            if top != "track" && top != "geom" {
                violations.push(format!("{} imports {top}/", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(violations.is_empty(), "track/ may use only geom/:\n  {}", violations.join("\n  "));
}

#[test]
fn the_scan_sees_every_kind_of_path() {
    let m = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
    let found = |code: &str, module: &str| imported_top_modules(&without_comments(code), &m(module));
    assert!(found("use crate::sink::clips::tap;", "source/runner").contains("sink"));
    assert!(found("use crate::{geom, sink::events};", "track/x").contains("sink"));
    assert!(found("let t: Option<Arc<crate::watch::X>> = None;", "infer/owl").contains("watch"));
    // `super::super::sink` from source/a/b resolves inside source/ (only the top module counts).
    assert_eq!(found("use super::super::sink;", "source/a/b"), BTreeSet::from(["source".to_string()]));
    // Comments and strings are not imports.
    assert!(found("// crate::sink\n/// [`crate::cli`]\nlet s = \"crate::watch\";", "infer/x").is_empty());
}
