//! The real [`ProviderProbe`]: the loaded ONNX Runtime, the provider libraries next to it, the GPU device nodes.

use std::path::{Path, PathBuf};

use super::{ProviderKind, ProviderProbe};

/// The real probe: the loaded ONNX Runtime (`GetAvailableProviders` through ort), the provider libraries next to
/// it, and the GPU device nodes.
#[derive(Debug, Clone, Default)]
pub struct OrtProbe {
    /// The directory of the loaded `libonnxruntime.so`.
    pub library_dir: Option<PathBuf>,
    /// The loaded library, for messages.
    pub library: Option<PathBuf>,
}

impl OrtProbe {
    /// A probe of the library [`super::super::runtime::environment`] loaded. Call it after the environment is up.
    pub fn loaded() -> OrtProbe {
        let library = super::super::runtime::loaded_library().map(Path::to_path_buf);
        OrtProbe { library_dir: library.as_deref().and_then(Path::parent).map(Path::to_path_buf), library }
    }
}

/// Device nodes of Jetson's integrated GPU (nvgpu driver; L4T R35/R36 create both names). A container started
/// with `--runtime nvidia` gets them mapped.
const JETSON_GPU_NODES: &[&str] = &["/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl"];

impl ProviderProbe for OrtProbe {
    fn built_with(&self, provider: ProviderKind) -> bool {
        use ort::ep::ExecutionProvider;
        let answer = match provider {
            ProviderKind::TensorRt => ort::ep::TensorRT::is_available(),
            ProviderKind::Cuda => ort::ep::CUDA::is_available(),
            ProviderKind::Cpu => return true,
        };
        answer.unwrap_or_else(|e| {
            tracing::warn!(provider = provider.label(), "could not ask ONNX Runtime for its providers: {e}");
            false
        })
    }

    fn missing_library(&self, provider: ProviderKind) -> Option<PathBuf> {
        let dir = self.library_dir.as_ref()?;
        let path = dir.join(provider.library_name()?);
        (!path.exists()).then_some(path)
    }

    fn has_gpu(&self, index: u32) -> bool {
        Path::new(&format!("/dev/nvidia{index}")).exists()
            || (index == 0 && JETSON_GPU_NODES.iter().any(|n| Path::new(n).exists()))
    }

    fn runtime(&self) -> String {
        let version = ort_version();
        match &self.library {
            Some(p) => format!("{} ({version})", p.display()),
            None => version,
        }
    }
}

/// ONNX Runtime's version: from the loaded library's file name (`libonnxruntime.so.1.31.1`, through the
/// `libonnxruntime.so` symlink), else from its build string (`git-branch=rel-1.31.1`), else the build string.
pub fn ort_version() -> String {
    let from_name = super::super::runtime::loaded_library()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).and_then(version_from_file_name));
    if let Some(v) = from_name {
        return v;
    }
    let info = ort_build_info();
    info.split([',', ' '])
        .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .unwrap_or(info)
}

/// `libonnxruntime.so.1.31.1` → `1.31.1`.
fn version_from_file_name(name: &str) -> Option<String> {
    let v = name.strip_prefix("libonnxruntime.so.")?;
    (v.split('.').count() >= 2 && v.split('.').all(|p| p.parse::<u32>().is_ok())).then(|| v.to_string())
}

/// ONNX Runtime's version and build string (`1.31.1 ORT Build Info: git-branch=..., git-commit-id=...`), once
/// the environment is loaded: part of the engine cache key, so a different build of the same version counts too.
pub fn ort_build_info() -> String {
    match super::super::runtime::loaded_library() {
        Some(p) => {
            let version = std::fs::canonicalize(p)
                .ok()
                .and_then(|p| p.file_name().and_then(|n| n.to_str()).and_then(version_from_file_name))
                .unwrap_or_default();
            format!("{version} {}", ort::info().trim()).trim().to_string()
        }
        None => "ONNX Runtime (not loaded)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_the_library_name() {
        assert_eq!(version_from_file_name("libonnxruntime.so.1.31.1").as_deref(), Some("1.31.1"));
        assert_eq!(version_from_file_name("libonnxruntime.so"), None);
        assert_eq!(version_from_file_name("libonnxruntime.so.x.y"), None);
    }
}
