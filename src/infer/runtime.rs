//! Finding and loading the ONNX Runtime shared library, and the options every session is built with.
//!
//! `ort` is built with `load-dynamic`: the library is loaded at run time, so one binary works with the CPU library
//! from PyPI here and with the CUDA/TensorRT library of NVIDIA's Jetson wheel on a Jetson.
//! The library is looked for, in order, at `ORT_DYLIB_PATH`, in the project's `.deps/onnxruntime/`
//! (where `make deps` puts it), and next to the binary. A missing library is an error, never a panic.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;

use super::{InferError, Result};

const LIB_NAME: &str = "libonnxruntime.so";

/// How each ONNX Runtime session is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads inside one operator. Default: 0, meaning ONNX Runtime's choice (one per physical core).
    pub intra_threads: usize,
    /// Graph optimisation level, 0 (none) to 3 (all). Default: 3.
    pub optimization_level: u8,
}

/// Default for [`SessionOptions::intra_threads`]: let ONNX Runtime decide.
pub const DEFAULT_INTRA_THREADS: usize = 0;
/// Default for [`SessionOptions::optimization_level`]: every optimisation.
pub const DEFAULT_OPTIMIZATION_LEVEL: u8 = 3;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { intra_threads: DEFAULT_INTRA_THREADS, optimization_level: DEFAULT_OPTIMIZATION_LEVEL }
    }
}

impl SessionOptions {
    pub(crate) fn level(&self) -> GraphOptimizationLevel {
        match self.optimization_level {
            0 => GraphOptimizationLevel::Disable,
            1 => GraphOptimizationLevel::Level1,
            2 => GraphOptimizationLevel::Level2,
            _ => GraphOptimizationLevel::All,
        }
    }
}

/// The places the library is looked for, in order.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    // .deps/ of the project: the working directory, and the checkout that holds the binary (target/<profile>/).
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(".deps/onnxruntime").join(LIB_NAME));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            out.push(dir.join(".deps/onnxruntime").join(LIB_NAME));
        }
        if let Some(dir) = exe.parent() {
            out.push(dir.join(LIB_NAME));
        }
    }
    // Also from this crate's own checkout, so that tests and benches find it without setup.
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/onnxruntime").join(LIB_NAME));
    out.dedup();
    out
}

/// Finds the library without loading it.
pub fn find_library() -> Result<PathBuf> {
    let candidates = candidate_paths();
    if let Some(explicit) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(explicit);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(InferError::RuntimeMissing { looked: format!("ORT_DYLIB_PATH={}", p.display()) })
        };
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| InferError::RuntimeMissing {
        looked: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// Why loading failed, kept so that every later caller gets the same error.
#[derive(Debug, Clone)]
enum LoadFailure {
    Missing(String),
    Load(PathBuf, String),
}

static ENVIRONMENT: OnceLock<std::result::Result<(PathBuf, Environment), LoadFailure>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = match find_library() {
            Ok(p) => p,
            Err(InferError::RuntimeMissing { looked }) => return Err(LoadFailure::Missing(looked)),
            Err(e) => return Err(LoadFailure::Missing(e.to_string())),
        };
        let fail = |e: &dyn std::fmt::Display| LoadFailure::Load(path.clone(), e.to_string());
        let builder = ort::init_from(&path).map_err(|e| fail(&e))?;
        let env = builder.with_name("lookout").build().map_err(|e| fail(&e))?;
        tracing::debug!(library = %path.display(), "loaded ONNX Runtime");
        Ok((path, env))
    });
    match loaded {
        Ok((_, env)) => Ok(env),
        Err(LoadFailure::Missing(looked)) => Err(InferError::RuntimeMissing { looked: looked.clone() }),
        Err(LoadFailure::Load(path, message)) => {
            Err(InferError::RuntimeLoad { path: path.clone(), message: message.clone() })
        }
    }
}

/// The path the library was loaded from, once [`environment`] succeeded.
pub fn loaded_library() -> Option<&'static Path> {
    match ENVIRONMENT.get() {
        Some(Ok((p, _))) => Some(p.as_path()),
        _ => None,
    }
}

/// Builds a CPU session for one graph.
pub(crate) fn build_session(path: &Path, opts: &SessionOptions) -> Result<ort::session::Session> {
    let env = environment()?;
    let graph = path.display().to_string();
    let err = |e: &dyn std::fmt::Display| InferError::Ort { graph: graph.clone(), message: e.to_string() };
    let mut builder = ort::session::Session::builder(env).map_err(|e| err(&e))?;
    builder = builder.with_optimization_level(opts.level()).map_err(|e| err(&e))?;
    if opts.intra_threads > 0 {
        builder = builder.with_intra_threads(opts.intra_threads).map_err(|e| err(&e))?;
    }
    builder.commit_from_file(path).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_include_project_deps() {
        let c = candidate_paths();
        assert!(c.iter().any(|p| p.ends_with(".deps/onnxruntime/libonnxruntime.so")), "{c:?}");
    }
}
