//! Finding and loading the ONNX Runtime shared library, and the options every session is built with.
//!
//! `ort` is built with `load-dynamic`: the library is loaded at run time, so one binary works with the CPU library
//! from PyPI here and with the CUDA/TensorRT library of NVIDIA's Jetson wheel on a Jetson.
//! The library is looked for, in order, at `ORT_DYLIB_PATH`, in the project's `.deps/onnxruntime/`
//! (where `make deps` puts it), and next to the binary. A missing library is an error, never a panic.
//!
//! The oldest library that works is [`MIN_VERSION`]: `ort` is built for ONNX Runtime's C API version N (the `api-N`
//! feature in Cargo.toml, the lowest `ort` offers and all lookout needs), and API version N first shipped in ONNX
//! Runtime 1.N. Before `ort` loads the library, its version is read (`OrtGetApiBase()->GetVersionString()`, the call
//! the C API provides for this) and an older one is refused with an error that names both versions.
//!
//! Every session is built by [`build_session`], which asks [`device::choose`] for the execution provider of the
//! graph (see `device.rs` for the fallback order of `--device auto` and the TensorRT engine cache).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use super::device::{self, Attempt, CacheKey, Device, GraphRole, Missing, OrtProbe, Provider, TensorRtSettings};
use super::{InferError, Result};

const LIB_NAME: &str = "libonnxruntime.so";

/// The oldest ONNX Runtime release lookout runs with: 1.N for the C API version N that `ort` is built for.
pub const MIN_VERSION: OrtVersion = OrtVersion { major: 1, minor: ort::MINOR_VERSION, patch: 0 };

/// An ONNX Runtime release number, as the library reports it (`1.17.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrtVersion {
    /// Major: 1 for every release so far.
    pub major: u32,
    /// Minor: equal to the newest C API version the release provides.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl OrtVersion {
    /// Parses `major.minor[.patch]`, ignoring a suffix after the numbers (`1.20.0-dev`, `1.18.1+cu12`).
    pub fn parse(s: &str) -> Option<OrtVersion> {
        let mut parts = s.trim().splitn(3, '.');
        let number = |p: &str| -> Option<u32> {
            let digits = &p[..p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len())];
            digits.parse().ok()
        };
        let major = parts.next().and_then(|p| p.parse().ok())?;
        let minor_part = parts.next()?;
        let minor = number(minor_part)?;
        // A suffix on the minor (`1.20-dev`) ends the version there.
        let patch = match parts.next() {
            Some(p) if minor_part.bytes().all(|b| b.is_ascii_digit()) => number(p).unwrap_or(0),
            _ => 0,
        };
        Some(OrtVersion { major, minor, patch })
    }

    /// Whether lookout runs with this release: the C API it provides is at least the one `ort` is built for. (A
    /// later major release would be judged by `ort` itself, which loads the library next.)
    pub fn is_supported(self) -> bool {
        (self.major, self.minor) >= (MIN_VERSION.major, MIN_VERSION.minor)
    }
}

impl fmt::Display for OrtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version string the library at `path` reports, read before `ort` loads it.
fn library_version(path: &Path) -> std::result::Result<String, String> {
    // SAFETY: loading the library runs its initialisers, which `ort::init_from` is about to do anyway. Every ONNX
    // Runtime release exports `OrtGetApiBase` with this signature (onnxruntime_c_api.h), returning a pointer to a
    // static struct whose `GetVersionString` returns a static NUL-terminated string, which is copied here.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let get_base: libloading::Symbol<unsafe extern "system" fn() -> *const ort::sys::OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|_| "it does not export OrtGetApiBase, so it is not ONNX Runtime".to_owned())?;
        let base = get_base();
        if base.is_null() {
            return Err("OrtGetApiBase returned nothing".to_owned());
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return Err("GetVersionString returned nothing".to_owned());
        }
        let version = std::ffi::CStr::from_ptr(version).to_string_lossy().into_owned();
        // Kept loaded for the life of the process, as `ort` keeps it: unloading ONNX Runtime between this check and
        // `ort` loading it again would run its static destructors for nothing.
        std::mem::forget(lib);
        Ok(version)
    }
}

/// How each ONNX Runtime session is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads inside one operator. Default: 0, meaning ONNX Runtime's choice (one per physical core).
    pub intra_threads: usize,
    /// Graph optimisation level, 0 (none) to 3 (all). Default: 3.
    pub optimization_level: u8,
    /// Where the image graph (and the hf layout's single graph) runs. Default [`device::DEFAULT_DEVICE`] (auto).
    pub device: Device,
    /// Where the text encoder runs; it runs only when the queries change. Default `None`: the same as `device`.
    pub text_device: Option<Device>,
    /// Used by graphs that run on TensorRT. Default: [`TensorRtSettings::default`] (fp16 on a Jetson).
    pub tensorrt: TensorRtSettings,
}

/// Default for [`SessionOptions::intra_threads`]: let ONNX Runtime decide.
pub const DEFAULT_INTRA_THREADS: usize = 0;
/// Default for [`SessionOptions::optimization_level`]: every optimisation.
pub const DEFAULT_OPTIMIZATION_LEVEL: u8 = 3;

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            intra_threads: DEFAULT_INTRA_THREADS,
            optimization_level: DEFAULT_OPTIMIZATION_LEVEL,
            device: device::DEFAULT_DEVICE,
            text_device: None,
            tensorrt: TensorRtSettings::default(),
        }
    }
}

impl SessionOptions {
    /// The device a graph of this role runs on.
    pub fn device_for(&self, role: GraphRole) -> Device {
        match role {
            GraphRole::Text => self.text_device.unwrap_or(self.device),
            GraphRole::Image | GraphRole::Combined => self.device,
        }
    }

    pub(crate) fn level(&self) -> GraphOptimizationLevel {
        match self.optimization_level {
            0 => GraphOptimizationLevel::Disable,
            1 => GraphOptimizationLevel::Level1,
            2 => GraphOptimizationLevel::Level2,
            _ => GraphOptimizationLevel::All,
        }
    }
}

/// Refuses a graph whose floating-point inputs or outputs are not `f32`: lookout feeds and reads `f32`, and an
/// fp16 export made without `keep_io_types` (float16 pixel values) would otherwise fail at the first frame with
/// ONNX Runtime's type error. Half precision on a GPU comes from TensorRT's `fp16` on the fp32 graph instead.
pub fn check_f32_io(session: &ort::session::Session, graph: &Path) -> Result<()> {
    use ort::value::TensorElementType as T;
    let inputs = session.inputs().iter().map(|o| ("input", o.name(), o.dtype().tensor_type()));
    let outputs = session.outputs().iter().map(|o| ("output", o.name(), o.dtype().tensor_type()));
    for (what, name, ty) in inputs.chain(outputs) {
        if let Some(ty @ (T::Float16 | T::Bfloat16 | T::Float64)) = ty {
            return Err(InferError::Model {
                dir: graph.to_path_buf(),
                message: format!(
                    "graph {what} {name:?} is {ty:?}, and lookout exchanges f32 with its graphs: use the fp32 graph \
                     (on a GPU, TensorRT's fp16 = true gives half precision from it) or an fp16 export with f32 \
                     inputs and outputs (onnxconverter_common's keep_io_types=True)"
                ),
            });
        }
    }
    Ok(())
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
    TooOld(PathBuf, String),
}

/// The library's path and version, and the environment, once loaded.
type Loaded = (PathBuf, OrtVersion, Environment);

static ENVIRONMENT: OnceLock<std::result::Result<Loaded, LoadFailure>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = match find_library() {
            Ok(p) => p,
            Err(InferError::RuntimeMissing { looked }) => return Err(LoadFailure::Missing(looked)),
            Err(e) => return Err(LoadFailure::Missing(e.to_string())),
        };
        let fail = |e: &dyn std::fmt::Display| LoadFailure::Load(path.clone(), e.to_string());
        let reported = library_version(&path).map_err(|e| fail(&e))?;
        let version = match OrtVersion::parse(&reported) {
            Some(v) if v.is_supported() => v,
            _ => return Err(LoadFailure::TooOld(path, reported)),
        };
        let builder = ort::init_from(&path).map_err(|e| fail(&e))?;
        let env = builder.with_name("lookout").build().map_err(|e| fail(&e))?;
        tracing::debug!(library = %path.display(), %version, "loaded ONNX Runtime");
        Ok((path, version, env))
    });
    match loaded {
        Ok((_, _, env)) => Ok(env),
        Err(LoadFailure::Missing(looked)) => Err(InferError::RuntimeMissing { looked: looked.clone() }),
        Err(LoadFailure::Load(path, message)) => {
            Err(InferError::RuntimeLoad { path: path.clone(), message: message.clone() })
        }
        Err(LoadFailure::TooOld(path, loaded)) => {
            Err(InferError::RuntimeTooOld { path: path.clone(), loaded: loaded.clone(), required: MIN_VERSION })
        }
    }
}

/// The path the library was loaded from, once [`environment`] succeeded.
pub fn loaded_library() -> Option<&'static Path> {
    match ENVIRONMENT.get() {
        Some(Ok((p, _, _))) => Some(p.as_path()),
        _ => None,
    }
}

/// The version of the loaded library, once [`environment`] succeeded.
pub fn loaded_version() -> Option<OrtVersion> {
    match ENVIRONMENT.get() {
        Some(Ok((_, v, _))) => Some(*v),
        _ => None,
    }
}

/// Builds the session for one graph on the provider [`device::choose`] picks for it, and logs which one it got.
pub(crate) fn build_session(path: &Path, opts: &SessionOptions) -> Result<ort::session::Session> {
    let env = environment()?;
    let role = GraphRole::from_path(path);
    let device = opts.device_for(role);
    let graph = path.display().to_string();
    let probe = OrtProbe::loaded();
    let chosen = device::choose(&graph, device, &probe, |provider| build_on(env, path, role, opts, provider))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| graph.clone());
    if device == Device::Cpu {
        tracing::debug!("{name}: runs on {}", chosen.describe());
    } else {
        tracing::info!("{name}: runs on {} (--device {device})", chosen.describe());
    }
    check_f32_io(&chosen.value, path)?;
    if let Ok(mut used) = PROVIDERS_USED.lock() {
        used.push((path.to_path_buf(), chosen.provider));
    }
    Ok(chosen.value)
}

/// Every session built by this process, with the provider it got, in order (bounded by the number of sessions
/// built, a handful per model).
static PROVIDERS_USED: std::sync::Mutex<Vec<(PathBuf, Provider)>> = std::sync::Mutex::new(Vec::new());

/// The graphs this process built sessions for, and the provider each got: for `models prepare` and summaries.
pub fn providers_used() -> Vec<(PathBuf, Provider)> {
    PROVIDERS_USED.lock().map(|u| u.clone()).unwrap_or_default()
}

/// One attempt: a fresh builder, the provider registered with `error_on_failure`, then the session.
///
/// A failure to register, or to build the session on a GPU provider, makes the provider unavailable (auto moves
/// on); a failure on the CPU is the graph's own fault and is returned as it is.
fn build_on(
    env: &Environment,
    path: &Path,
    role: GraphRole,
    opts: &SessionOptions,
    provider: Provider,
) -> std::result::Result<ort::session::Session, Attempt<InferError>> {
    let graph = path.display().to_string();
    let fatal =
        |e: &dyn std::fmt::Display| Attempt::Fatal(InferError::Ort { graph: graph.clone(), message: e.to_string() });
    let refused = |e: &dyn std::fmt::Display| {
        Attempt::Unavailable(Missing::Failed { provider: provider.kind(), message: e.to_string() })
    };
    let mut builder = ort::session::Session::builder(env).map_err(|e| fatal(&e))?;
    builder = builder.with_optimization_level(opts.level()).map_err(|e| fatal(&e))?;
    if opts.intra_threads > 0 {
        builder = builder.with_intra_threads(opts.intra_threads).map_err(|e| fatal(&e))?;
    }
    let providers = match provider {
        Provider::Cpu => Vec::new(),
        Provider::Cuda(n) => vec![cuda(n)],
        Provider::TensorRt(n) => {
            let trt = tensorrt(path, role, &opts.tensorrt, n).map_err(|e| fatal(&e))?;
            // Nodes TensorRT cannot take run on CUDA rather than on the CPU (ONNX Runtime adds the CPU last).
            vec![trt, cuda(n)]
        }
    };
    if !providers.is_empty() {
        builder = with_providers(builder, &providers).map_err(|e| refused(&e))?;
    }
    builder.commit_from_file(path).map_err(|e| if provider == Provider::Cpu { fatal(&e) } else { refused(&e) })
}

fn with_providers(builder: SessionBuilder, providers: &[ExecutionProviderDispatch]) -> ort::Result<SessionBuilder> {
    builder.with_execution_providers(providers).map_err(|e| ort::Error::new(e.message().to_string()))
}

fn cuda(device: u32) -> ExecutionProviderDispatch {
    ort::ep::CUDA::default().with_device_id(device as i32).build().error_on_failure()
}

/// The TensorRT provider for one graph: precision, workspace, optimisation profile, and the engine and timing
/// caches in the graph's own cache directory (created here, with a `key.txt` that says what it was built for).
fn tensorrt(
    path: &Path,
    role: GraphRole,
    trt: &TensorRtSettings,
    device: u32,
) -> std::result::Result<ExecutionProviderDispatch, String> {
    trt.validate()?;
    let (dir, shapes) = tensorrt_cache_dir(path, role, trt)?;
    tracing::info!(
        "{}: TensorRT engine cache {} (fp16 {}); building an engine takes minutes, `lookout models prepare` does it \
         ahead of time",
        path.display(),
        dir.display(),
        trt.fp16
    );
    let mut ep = ort::ep::TensorRT::default()
        .with_device_id(device as i32)
        .with_fp16(trt.fp16)
        .with_max_workspace_size(usize::try_from(trt.workspace_bytes).unwrap_or(usize::MAX))
        .with_engine_cache(true)
        .with_engine_cache_path(dir.display())
        .with_timing_cache(true)
        .with_timing_cache_path(dir.display());
    if let Some(shapes) = shapes {
        ep = ep
            .with_profile_min_shapes(shapes.min)
            .with_profile_opt_shapes(shapes.opt)
            .with_profile_max_shapes(shapes.max);
    }
    Ok(ep.build().error_on_failure())
}

/// The engine cache directory of a graph (created, with its `key.txt`), and the profile shapes it is keyed by.
///
/// The shapes need the model's input size, read from the model directory (`<dir>/onnx/<graph>.onnx`); a graph
/// outside a model directory gets no explicit profile (TensorRT then builds for the shapes it first sees).
pub fn tensorrt_cache_dir(
    path: &Path,
    role: GraphRole,
    trt: &TensorRtSettings,
) -> std::result::Result<(PathBuf, Option<device::ProfileShapes>), String> {
    let model = path.parent().and_then(Path::parent).and_then(|dir| super::ModelDir::open(dir).ok());
    // The profiles name OWL's inputs; Grounding DINO's graphs get none, and TensorRT builds for the shapes it first
    // sees (its pixel size is fixed by the graph anyway; only the batch and the text length vary).
    let shapes =
        model.as_ref().filter(|m| !m.family.is_grounding_dino()).map(|m| role.profile_shapes(m.image_size, trt));
    let model_name = model.as_ref().map(|m| m.name.clone()).unwrap_or_else(|| "graph".into());
    let started = std::time::Instant::now();
    let model_sha256 = device::file_sha256(path)
        .map_err(|e| format!("cannot read {} to key its engine cache: {e}", path.display()))?;
    tracing::debug!(graph = %path.display(), ms = started.elapsed().as_millis() as u64, "hashed graph");
    let key = CacheKey {
        model_sha256,
        provider: "tensorrt".into(),
        runtime: device::ort_build_info(),
        platform: device::platform_release().unwrap_or_default(),
        shapes: shapes.clone().unwrap_or(device::ProfileShapes {
            min: String::new(),
            opt: String::new(),
            max: String::new(),
        }),
        fp16: trt.fp16,
    };
    let dir = key.dir(&trt.cache_root, &model_name, path);
    std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("key.txt"), key.canonical())).map_err(|e| {
        format!("cannot create the TensorRT engine cache {}: {e}; set [tensorrt] cache_dir", dir.display())
    })?;
    Ok((dir, shapes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_with_float16_inputs_is_refused_by_name() {
        let graph = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/f16-io.onnx");
        let err = build_session(&graph, &SessionOptions::default()).unwrap_err().to_string();
        assert!(err.contains("\"pixel_values\" is Float16") && err.contains("keep_io_types"), "{err}");
        assert!(err.contains("f16-io.onnx") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn text_device_defaults_to_the_main_device() {
        let o = SessionOptions { device: Device::TensorRt(0), ..SessionOptions::default() };
        assert_eq!(o.device_for(GraphRole::Text), Device::TensorRt(0));
        let o = SessionOptions { text_device: Some(Device::Cuda(0)), ..o };
        assert_eq!(
            (o.device_for(GraphRole::Text), o.device_for(GraphRole::Image)),
            (Device::Cuda(0), Device::TensorRt(0))
        );
    }

    #[test]
    fn versions_parse_as_libraries_report_them() {
        let v = |major, minor, patch| Some(OrtVersion { major, minor, patch });
        assert_eq!(OrtVersion::parse("1.17.3"), v(1, 17, 3));
        assert_eq!(OrtVersion::parse(" 1.31.1\n"), v(1, 31, 1));
        assert_eq!(OrtVersion::parse("1.20.0-dev"), v(1, 20, 0));
        assert_eq!(OrtVersion::parse("1.18.1+cu12"), v(1, 18, 1));
        assert_eq!(OrtVersion::parse("1.19"), v(1, 19, 0));
        assert_eq!(OrtVersion::parse("1.20-dev.5"), v(1, 20, 0));
        for bad in ["", "1", "one.two", "1.x.3", ".17.3"] {
            assert_eq!(OrtVersion::parse(bad), None, "{bad:?}");
        }
        assert_eq!(OrtVersion::parse("1.17.3").unwrap().to_string(), "1.17.3");
    }

    #[test]
    fn the_floor_is_the_api_version_ort_is_built_for() {
        assert_eq!((MIN_VERSION.major, MIN_VERSION.minor), (1, ort::MINOR_VERSION));
        let at = |minor, patch| OrtVersion { major: 1, minor, patch };
        assert!(at(MIN_VERSION.minor, 0).is_supported());
        assert!(at(MIN_VERSION.minor, 2).is_supported());
        assert!(at(MIN_VERSION.minor + 14, 1).is_supported());
        assert!(!at(MIN_VERSION.minor - 1, 9).is_supported());
        assert!(!OrtVersion { major: 0, minor: 99, patch: 0 }.is_supported());
        assert!(OrtVersion { major: 2, minor: 0, patch: 0 }.is_supported());
    }

    #[test]
    fn candidates_include_project_deps() {
        let c = candidate_paths();
        assert!(c.iter().any(|p| p.ends_with(".deps/onnxruntime/libonnxruntime.so")), "{c:?}");
    }
}
