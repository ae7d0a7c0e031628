//! Which execution provider each ONNX Runtime session runs on: `--device`, the fallback order of `auto`, the
//! TensorRT settings and the per-model engine cache.
//!
//! The choice is made in one place, [`choose`], against a [`ProviderProbe`]: the test seam that answers "was the
//! loaded ONNX Runtime built with provider X, is its plug-in library there, is GPU N present". [`OrtProbe`] asks
//! ONNX Runtime and the device nodes; the unit tests use a scripted probe, so the fallback order and every error
//! message are tested on a machine without a GPU.
//!
//! `auto` tries, in order (one line is logged per session with the reason for each fallback):
//!
//! | step     | skipped when                                                                              |
//! |----------|-------------------------------------------------------------------------------------------|
//! | TensorRT | ORT built without it, `libonnxruntime_providers_tensorrt.so` missing, no GPU 0, or ORT fails to register it or to build the session with it (e.g. `libnvinfer` missing) |
//! | CUDA     | the same checks for the CUDA provider                                                      |
//! | CPU      | never: always there                                                                        |
//!
//! An explicit `cpu`, `cuda[:N]` or `tensorrt[:N]` never falls back: if it is unavailable, session building fails
//! with a [`DeviceError`] that names what is missing (the ORT build, the provider library, or the device) and what
//! to do. Registration uses ort's `error_on_failure`, so a provider that ORT cannot start is an error here, never a
//! silent switch to the CPU.
//!
//! TensorRT keeps its engines (and its timing cache) in one directory per graph, under
//! [`TensorRtSettings::cache_root`], named by a [`CacheKey`]: the sha256 of the graph file, the provider, the ONNX
//! Runtime build, the platform (the Jetson L4T release, which fixes the TensorRT version), the optimisation-profile
//! shapes and the precision. Anything that would make an old engine wrong gives a new directory instead.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod probe;
mod tensorrt;

pub use probe::{OrtProbe, ort_build_info, ort_version};
pub use tensorrt::{
    CacheKey, DEFAULT_TRT_MAX_BATCH, DEFAULT_TRT_MAX_QUERIES, DEFAULT_TRT_MIN_BATCH, DEFAULT_TRT_OPT_BATCH,
    DEFAULT_TRT_OPT_QUERIES, DEFAULT_TRT_WORKSPACE_BYTES, GraphRole, ProfileShapes, TensorRtConfig, TensorRtSettings,
    default_cache_root, file_sha256,
};

/// Where a graph runs, as the user asks for it (`--device`, `[model] device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Device {
    /// TensorRT, then CUDA, then CPU: the first one that works.
    #[default]
    Auto,
    /// ONNX Runtime's CPU provider (MLAS).
    Cpu,
    /// The CUDA provider on GPU N.
    Cuda(u32),
    /// The TensorRT provider on GPU N (nodes TensorRT cannot take run on CUDA, then CPU).
    TensorRt(u32),
}

/// Default for `--device`: [`Device::Auto`].
pub const DEFAULT_DEVICE: Device = Device::Auto;

/// The values `--device` accepts, for help and error messages.
pub const DEVICE_VALUES: &str = "auto, cpu, cuda[:N] or tensorrt[:N]";

impl FromStr for Device {
    type Err = DeviceError;

    /// `auto`, `cpu`, `cuda`, `cuda:N`, `tensorrt`, `tensorrt:N` (also `trt`, `gpu` for `cuda`), case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((name, index)) => {
                let n = index.parse::<u32>().map_err(|_| DeviceError::Parse {
                    value: s.to_string(),
                    reason: format!("`{index}` is not a GPU index (0, 1, ...)"),
                })?;
                (name, Some(n))
            }
            None => (lower.as_str(), None),
        };
        let gpu = |make: fn(u32) -> Device| Ok(make(index.unwrap_or(0)));
        match name {
            "auto" | "cpu" if index.is_some() => {
                Err(DeviceError::Parse { value: s.to_string(), reason: format!("`{name}` takes no GPU index") })
            }
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => gpu(Device::Cuda),
            "tensorrt" | "trt" => gpu(Device::TensorRt),
            _ => Err(DeviceError::Parse { value: s.to_string(), reason: format!("use {DEVICE_VALUES}") }),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::TensorRt(n) => write!(f, "tensorrt:{n}"),
        }
    }
}

impl TryFrom<String> for Device {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

/// The kind of execution provider, without a device index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    TensorRt,
    Cuda,
    Cpu,
}

impl ProviderKind {
    /// The name ONNX Runtime knows the provider by (`GetAvailableProviders`).
    pub fn ort_name(self) -> &'static str {
        match self {
            ProviderKind::TensorRt => "TensorrtExecutionProvider",
            ProviderKind::Cuda => "CUDAExecutionProvider",
            ProviderKind::Cpu => "CPUExecutionProvider",
        }
    }

    /// The plug-in library a GPU build of ONNX Runtime loads for this provider, next to `libonnxruntime.so`.
    pub fn library_name(self) -> Option<&'static str> {
        match self {
            ProviderKind::TensorRt => Some("libonnxruntime_providers_tensorrt.so"),
            ProviderKind::Cuda => Some("libonnxruntime_providers_cuda.so"),
            ProviderKind::Cpu => None,
        }
    }

    /// `TensorRT`, `CUDA`, `CPU`.
    pub fn label(self) -> &'static str {
        match self {
            ProviderKind::TensorRt => "TensorRT",
            ProviderKind::Cuda => "CUDA",
            ProviderKind::Cpu => "CPU",
        }
    }
}

/// A concrete provider with its GPU: what a session is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    TensorRt(u32),
    Cuda(u32),
    Cpu,
}

impl Provider {
    pub fn kind(self) -> ProviderKind {
        match self {
            Provider::TensorRt(_) => ProviderKind::TensorRt,
            Provider::Cuda(_) => ProviderKind::Cuda,
            Provider::Cpu => ProviderKind::Cpu,
        }
    }

    /// The GPU index, for GPU providers.
    pub fn gpu(self) -> Option<u32> {
        match self {
            Provider::TensorRt(n) | Provider::Cuda(n) => Some(n),
            Provider::Cpu => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gpu() {
            Some(n) => write!(f, "{}:{n}", self.kind().label()),
            None => f.write_str(self.kind().label()),
        }
    }
}

impl Device {
    /// The providers to try, in order: `auto` → TensorRT:0, CUDA:0, CPU; an explicit device → itself only.
    pub fn candidates(self) -> Vec<Provider> {
        match self {
            Device::Auto => vec![Provider::TensorRt(0), Provider::Cuda(0), Provider::Cpu],
            Device::Cpu => vec![Provider::Cpu],
            Device::Cuda(n) => vec![Provider::Cuda(n)],
            Device::TensorRt(n) => vec![Provider::TensorRt(n)],
        }
    }
}

/// The test seam for provider availability. [`OrtProbe`] asks the loaded ONNX Runtime and the device nodes;
/// tests script the answers.
pub trait ProviderProbe {
    /// True if the loaded ONNX Runtime was built with this provider.
    fn built_with(&self, provider: ProviderKind) -> bool;
    /// The provider's plug-in library, when the build needs one and it is not where ONNX Runtime loads it from.
    fn missing_library(&self, provider: ProviderKind) -> Option<PathBuf>;
    /// True if GPU `index` is present (a device node exists; the driver is checked when the session starts).
    fn has_gpu(&self, index: u32) -> bool;
    /// The loaded ONNX Runtime, for messages: its path and build.
    fn runtime(&self) -> String;
    /// The providers the loaded ONNX Runtime was built with, for messages.
    fn built_providers(&self) -> Vec<ProviderKind> {
        [ProviderKind::TensorRt, ProviderKind::Cuda, ProviderKind::Cpu]
            .into_iter()
            .filter(|p| self.built_with(*p))
            .collect()
    }
}

/// What keeps a provider from being used. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The ONNX Runtime library was compiled without the provider.
    NotInBuild { provider: ProviderKind, runtime: String, built: Vec<ProviderKind> },
    /// The build has the provider, but its plug-in library is not next to `libonnxruntime.so`.
    ProviderLibrary { provider: ProviderKind, path: PathBuf },
    /// No such GPU.
    Device { index: u32 },
    /// ONNX Runtime refused to register the provider or to build the session with it.
    Failed { provider: ProviderKind, message: String },
}

impl Missing {
    /// A few words for the `auto` log line.
    pub fn short(&self) -> String {
        match self {
            Missing::NotInBuild { .. } => "not in this ONNX Runtime build".into(),
            Missing::ProviderLibrary { path, .. } => format!("{} missing", file_name(path)),
            Missing::Device { index } => format!("no GPU {index}"),
            Missing::Failed { message, .. } => format!("failed: {}", first_line(message)),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::NotInBuild { provider, runtime, built } => write!(
                f,
                "the ONNX Runtime library {runtime} was built without the {p} execution provider (it has: {has}). \
                 Use a build with {p}: on a Jetson the library of NVIDIA's onnxruntime-gpu wheel for your JetPack \
                 (see docs/jetson.md), elsewhere the onnxruntime-gpu wheel; set ORT_DYLIB_PATH to its \
                 libonnxruntime.so. Or use --device cpu",
                p = provider.label(),
                has = built.iter().map(|k| k.label()).collect::<Vec<_>>().join(", "),
            ),
            Missing::ProviderLibrary { provider, path } => write!(
                f,
                "the {p} provider library {path} is missing. It ships in the same wheel as libonnxruntime.so \
                 (onnxruntime/capi/); copy it next to the libonnxruntime.so that ORT_DYLIB_PATH names",
                p = provider.label(),
                path = path.display(),
            ),
            Missing::Device { index } => write!(
                f,
                "GPU {index} is not present (no /dev/nvidia{index}{jetson}). Check the driver (nvidia-smi, or \
                 tegrastats on a Jetson); in a container, run it with --runtime nvidia (or --gpus all)",
                jetson = if *index == 0 { " and no Jetson GPU device node" } else { "" },
            ),
            Missing::Failed { provider, message } => {
                write!(f, "ONNX Runtime could not use the {} provider: {}", provider.label(), one_line(message))?;
                let lower = message.to_ascii_lowercase();
                if lower.contains("cannot open shared object") || lower.contains("failed to load library") {
                    write!(
                        f,
                        ". A library it needs is missing: install the CUDA, cuDNN and TensorRT libraries of your \
                         JetPack or CUDA version (on a Jetson: apt install nvidia-jetpack), or add their directory \
                         to LD_LIBRARY_PATH"
                    )?;
                } else if lower.contains("no cuda-capable device") || lower.contains("cuda driver version") {
                    write!(f, ". The GPU or its driver is not usable here: check nvidia-smi (tegrastats on a Jetson)")?;
                }
                Ok(())
            }
        }
    }
}

/// Errors of device parsing and choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{value}`: {reason} (devices: {DEVICE_VALUES})")]
    Parse { value: String, reason: String },
    #[error("{graph}: --device {requested} is not available: {missing}")]
    Unavailable { graph: String, requested: Device, missing: Missing },
    #[error("{graph}: --device auto found no usable provider ({})", describe_fallbacks(.fallbacks))]
    NothingWorked { graph: String, fallbacks: Vec<Fallback> },
}

/// A provider that `auto` passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub provider: Provider,
    pub reason: Missing,
}

/// The outcome of [`choose`]: what was built, on which provider, and what `auto` passed over on the way.
#[derive(Debug)]
pub struct Chosen<T> {
    pub value: T,
    pub provider: Provider,
    pub fallbacks: Vec<Fallback>,
}

impl<T> Chosen<T> {
    /// One line for the log: `CPU (TensorRT:0: not in this ONNX Runtime build; CUDA:0: no GPU 0)`.
    pub fn describe(&self) -> String {
        if self.fallbacks.is_empty() {
            self.provider.to_string()
        } else {
            format!("{} (after {})", self.provider, describe_fallbacks(&self.fallbacks))
        }
    }
}

fn describe_fallbacks(fallbacks: &[Fallback]) -> String {
    fallbacks.iter().map(|f| format!("{}: {}", f.provider, f.reason.short())).collect::<Vec<_>>().join("; ")
}

/// Checks a provider against the probe, without starting it.
pub fn check(provider: Provider, probe: &dyn ProviderProbe) -> Result<(), Missing> {
    let kind = provider.kind();
    if kind == ProviderKind::Cpu {
        return Ok(());
    }
    if !probe.built_with(kind) {
        return Err(Missing::NotInBuild { provider: kind, runtime: probe.runtime(), built: probe.built_providers() });
    }
    if let Some(path) = probe.missing_library(kind) {
        return Err(Missing::ProviderLibrary { provider: kind, path });
    }
    if let Some(index) = provider.gpu()
        && !probe.has_gpu(index)
    {
        return Err(Missing::Device { index });
    }
    Ok(())
}

/// How one attempt of [`choose`] failed.
#[derive(Debug)]
pub enum Attempt<E> {
    /// The provider cannot be used here: `auto` moves on, an explicit device reports it.
    Unavailable(Missing),
    /// An error that another provider would not fix (an unreadable graph): returned as it is.
    Fatal(E),
}

/// Chooses the provider for one graph and builds with it: the one place where the fallback order lives.
///
/// Each candidate of `device` is checked against `probe`, then `build` is called with it. `build` registers the
/// provider (with `error_on_failure`) and creates the session; it returns [`Attempt::Unavailable`] with
/// [`Missing::Failed`] when ONNX Runtime refuses the provider, and [`Attempt::Fatal`] for errors that no other
/// provider would fix. `auto` moves on to the next candidate and records why; an explicit device returns
/// [`DeviceError::Unavailable`].
pub fn choose<T, E: From<DeviceError>>(
    graph: &str,
    device: Device,
    probe: &dyn ProviderProbe,
    mut build: impl FnMut(Provider) -> Result<T, Attempt<E>>,
) -> Result<Chosen<T>, E> {
    let mut fallbacks = Vec::new();
    for provider in device.candidates() {
        let attempt = check(provider, probe).map_err(Attempt::Unavailable).and_then(|()| build(provider));
        match attempt {
            Ok(value) => return Ok(Chosen { value, provider, fallbacks }),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Unavailable(missing)) if device != Device::Auto => {
                return Err(DeviceError::Unavailable { graph: graph.to_string(), requested: device, missing }.into());
            }
            Err(Attempt::Unavailable(reason)) => {
                tracing::debug!(graph, %provider, reason = %reason, "device auto: falling back");
                fallbacks.push(Fallback { provider, reason });
            }
        }
    }
    Err(DeviceError::NothingWorked { graph: graph.to_string(), fallbacks }.into())
}

/// True on an NVIDIA Jetson (L4T writes `/etc/nv_tegra_release`; NVIDIA's l4t containers carry it too).
pub fn is_jetson() -> bool {
    Path::new(JETSON_RELEASE_FILE).is_file()
}

/// The file that identifies a Jetson and its L4T release.
pub const JETSON_RELEASE_FILE: &str = "/etc/nv_tegra_release";

/// The first line of `/etc/nv_tegra_release` (e.g. `# R36 (release), REVISION: 4.3, ...`): it fixes the CUDA
/// and TensorRT versions, so it is part of the engine cache key.
pub fn platform_release() -> Option<String> {
    let text = std::fs::read_to_string(JETSON_RELEASE_FILE).ok()?;
    text.lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("").trim();
    if line.len() > 160 {
        let mut end = 160;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        &line[..end]
    } else {
        line
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashSet;

    /// A scripted probe and registration: which providers the "build" has, which libraries are missing, which
    /// GPUs exist, and which providers fail when ONNX Runtime starts them.
    #[derive(Default)]
    struct Script {
        built: HashSet<&'static str>,
        missing_lib: HashSet<&'static str>,
        gpus: HashSet<u32>,
        fail: Vec<(&'static str, &'static str)>,
        tried: RefCell<Vec<Provider>>,
    }

    impl Script {
        fn cpu_only() -> Self {
            Script::default()
        }
        fn jetson() -> Self {
            Script { built: ["TensorRT", "CUDA"].into(), gpus: [0].into(), ..Script::default() }
        }
        fn build(&self, p: Provider) -> Result<&'static str, Attempt<DeviceError>> {
            self.tried.borrow_mut().push(p);
            match self.fail.iter().find(|(label, _)| *label == p.kind().label()) {
                Some((_, message)) => {
                    Err(Attempt::Unavailable(Missing::Failed { provider: p.kind(), message: message.to_string() }))
                }
                None => Ok("session"),
            }
        }
    }

    impl ProviderProbe for Script {
        fn built_with(&self, p: ProviderKind) -> bool {
            p == ProviderKind::Cpu || self.built.contains(p.label())
        }
        fn missing_library(&self, p: ProviderKind) -> Option<PathBuf> {
            self.missing_lib.contains(p.label()).then(|| PathBuf::from("/ort").join(p.library_name().unwrap()))
        }
        fn has_gpu(&self, index: u32) -> bool {
            self.gpus.contains(&index)
        }
        fn runtime(&self) -> String {
            "/ort/libonnxruntime.so (1.31.1)".into()
        }
    }

    fn run(device: Device, s: &Script) -> Result<Chosen<&'static str>, DeviceError> {
        choose("onnx/image_embedder.onnx", device, s, |p| s.build(p))
    }

    #[test]
    fn parses_devices() {
        for (text, want) in [
            ("auto", Device::Auto),
            ("CPU", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:1", Device::Cuda(1)),
            ("gpu", Device::Cuda(0)),
            ("tensorrt", Device::TensorRt(0)),
            (" TensorRT:2 ", Device::TensorRt(2)),
            ("trt", Device::TensorRt(0)),
        ] {
            assert_eq!(text.parse::<Device>().unwrap(), want, "{text}");
        }
        for d in [Device::Auto, Device::Cpu, Device::Cuda(3), Device::TensorRt(1)] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
    }

    #[test]
    fn parse_errors_say_what_is_accepted() {
        let e = "tpu".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("`tpu`") && e.contains("tensorrt[:N]"), "{e}");
        let e = "cuda:x".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("`x` is not a GPU index"), "{e}");
        let e = "cpu:0".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("takes no GPU index"), "{e}");
    }

    #[test]
    fn config_key_parses_with_serde() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct M {
            device: Device,
            text_device: Option<Device>,
        }
        let m: M = toml::from_str("device = \"tensorrt:1\"\ntext_device = \"cuda\"\n").unwrap();
        assert_eq!((m.device, m.text_device), (Device::TensorRt(1), Some(Device::Cuda(0))));
        let e = toml::from_str::<M>("device = \"gpu:two\"\n").unwrap_err().to_string();
        assert!(e.contains("not a GPU index"), "{e}");
        let t: TensorRtConfig = toml::from_str("fp16 = false\nworkspace_mb = 512\nmax_batch = 2\n").unwrap();
        let s = t.apply(TensorRtSettings::for_platform(true));
        assert!(!s.fp16 && s.workspace_bytes == 512 << 20 && s.max_batch == 2 && s.opt_batch == 2);
        assert!(toml::from_str::<TensorRtConfig>("fp61 = true\n").is_err());
    }

    #[test]
    fn auto_on_a_cpu_build_ends_on_cpu_and_says_why() {
        let s = Script::cpu_only();
        let c = run(Device::Auto, &s).unwrap();
        assert_eq!(c.provider, Provider::Cpu);
        assert_eq!(
            c.describe(),
            "CPU (after TensorRT:0: not in this ONNX Runtime build; CUDA:0: not in this ONNX Runtime build)"
        );
        // Nothing was started before the CPU: the probe answered.
        assert_eq!(*s.tried.borrow(), vec![Provider::Cpu]);
    }

    #[test]
    fn auto_order_is_tensorrt_cuda_cpu() {
        let s = Script::jetson();
        assert_eq!(run(Device::Auto, &s).unwrap().provider, Provider::TensorRt(0));

        // TensorRT starts but fails (libnvinfer missing): CUDA.
        let s =
            Script { fail: vec![("TensorRT", "libnvinfer.so.10: cannot open shared object file")], ..Script::jetson() };
        let c = run(Device::Auto, &s).unwrap();
        assert_eq!(c.provider, Provider::Cuda(0));
        assert_eq!(*s.tried.borrow(), vec![Provider::TensorRt(0), Provider::Cuda(0)]);
        assert!(c.describe().starts_with("CUDA:0 (after TensorRT:0: failed: libnvinfer.so.10"), "{}", c.describe());

        // Only CUDA in the build.
        let s = Script { built: ["CUDA"].into(), ..Script::jetson() };
        assert_eq!(run(Device::Auto, &s).unwrap().provider, Provider::Cuda(0));

        // GPU build, but no GPU: CPU, with the reason for both.
        let s = Script { gpus: HashSet::new(), ..Script::jetson() };
        let c = run(Device::Auto, &s).unwrap();
        assert_eq!(c.provider, Provider::Cpu);
        assert_eq!(c.fallbacks.iter().map(|f| f.reason.short()).collect::<Vec<_>>(), ["no GPU 0", "no GPU 0"]);

        // Provider library missing: the file is named.
        let s = Script { missing_lib: ["TensorRT"].into(), ..Script::jetson() };
        let c = run(Device::Auto, &s).unwrap();
        assert_eq!(c.provider, Provider::Cuda(0));
        assert_eq!(c.fallbacks[0].reason.short(), "libonnxruntime_providers_tensorrt.so missing");
    }

    #[test]
    fn explicit_choice_never_falls_back_and_names_what_is_missing() {
        // The ORT build lacks the provider.
        let e = run(Device::TensorRt(0), &Script::cpu_only()).unwrap_err().to_string();
        assert!(e.starts_with("onnx/image_embedder.onnx: --device tensorrt:0 is not available"), "{e}");
        assert!(e.contains("was built without the TensorRT execution provider (it has: CPU)"), "{e}");
        assert!(e.contains("ORT_DYLIB_PATH") && e.contains("--device cpu") && e.contains("/ort/libonnxruntime.so"));

        // The provider library is missing.
        let s = Script { missing_lib: ["CUDA"].into(), ..Script::jetson() };
        let e = run(Device::Cuda(0), &s).unwrap_err().to_string();
        assert!(e.contains("CUDA provider library /ort/libonnxruntime_providers_cuda.so is missing"), "{e}");

        // The device is missing.
        let e = run(Device::Cuda(1), &Script::jetson()).unwrap_err().to_string();
        assert!(e.contains("GPU 1 is not present (no /dev/nvidia1)") && e.contains("--runtime nvidia"), "{e}");

        // ORT refuses it: its message, and what to install.
        let s =
            Script { fail: vec![("TensorRT", "libnvinfer.so.10: cannot open shared object file")], ..Script::jetson() };
        let e = run(Device::TensorRt(0), &s).unwrap_err().to_string();
        assert!(e.contains("could not use the TensorRT provider: libnvinfer.so.10") && e.contains("nvidia-jetpack"));
        assert_eq!(*s.tried.borrow(), vec![Provider::TensorRt(0)], "no fallback for an explicit device");

        // CPU is always there.
        assert_eq!(run(Device::Cpu, &Script::cpu_only()).unwrap().provider, Provider::Cpu);
    }

    #[test]
    fn fatal_errors_stop_the_search() {
        let s = Script::jetson();
        let fatal = DeviceError::Parse { value: "graph".into(), reason: "unreadable".into() };
        let e = choose("g", Device::Auto, &s, |_| Err::<(), _>(Attempt::Fatal(fatal.clone()))).unwrap_err();
        assert_eq!(e, fatal);
    }

    #[test]
    fn auto_reports_when_even_cpu_fails() {
        let s = Script { fail: vec![("CPU", "model is corrupt")], ..Script::cpu_only() };
        let e = run(Device::Auto, &s).unwrap_err().to_string();
        assert!(e.contains("found no usable provider") && e.contains("CPU: failed: model is corrupt"), "{e}");
    }
}
