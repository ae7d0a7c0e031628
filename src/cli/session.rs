//! Flags that decide where and how the model runs (`--device`, `--graph-opt-level`, TensorRT), shared by every
//! subcommand that loads a model, and how they combine with the config file: a flag wins over `[model]` and
//! `[tensorrt]`, which win over the defaults.

use std::path::PathBuf;

use clap::Args;

use lookout::config::Config;
use lookout::infer::SessionOptions;
use lookout::infer::device::{Device, TensorRtSettings};

use super::UsageError;

/// Execution-provider and ONNX Runtime flags.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Device")]
pub struct SessionArgs {
    /// Where the model runs: auto (TensorRT, then CUDA, then CPU: the first that works), cpu, cuda[:N] or
    /// tensorrt[:N] [default: [model] device of the config file, when one is given, else auto]
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<Device>,
    /// Where the text encoder runs, if not on --device (it runs only when the queries change) [default: --device]
    #[arg(long, value_name = "DEVICE")]
    pub text_device: Option<Device>,
    /// ONNX Runtime graph optimisation: 0 none, 1 basic, 2 extended, 3 all [default: [model] optimization_level
    /// of the config file, when one is given, else 3]
    #[arg(long, value_name = "0-3", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub graph_opt_level: Option<u8>,
    /// fp16 kernels [default: true on a Jetson, false elsewhere]
    #[arg(long, help_heading = "TensorRT", value_name = "true|false")]
    pub trt_fp16: Option<bool>,
    /// Engine cache directory [default: $LOOKOUT_TRT_CACHE, else ~/.cache/lookout/tensorrt]
    #[arg(long, help_heading = "TensorRT", value_name = "DIR")]
    pub trt_cache: Option<PathBuf>,
    /// Largest image batch of the engine; `watch` batches one frame per source [default: 8]
    #[arg(long, help_heading = "TensorRT", value_name = "N")]
    pub trt_max_batch: Option<u32>,
}

impl SessionArgs {
    /// The session options: these flags, then `[model]` and `[tensorrt]` of `config`, then the defaults.
    /// `intra_threads` is resolved by the caller (the flag has a default, so the config's value is applied there).
    pub fn options(&self, intra_threads: usize, config: &Config) -> anyhow::Result<SessionOptions> {
        let defaults = SessionOptions::default();
        let mut tensorrt: TensorRtSettings = config.tensorrt.apply(defaults.tensorrt.clone());
        if let Some(v) = self.trt_fp16 {
            tensorrt.fp16 = v;
        }
        if let Some(v) = &self.trt_cache {
            tensorrt.cache_root = v.clone();
        }
        if let Some(v) = self.trt_max_batch {
            tensorrt.max_batch = v;
            tensorrt.opt_batch = tensorrt.opt_batch.min(v);
            tensorrt.min_batch = tensorrt.min_batch.min(v);
        }
        tensorrt.validate().map_err(UsageError)?;
        Ok(SessionOptions {
            intra_threads,
            optimization_level: self
                .graph_opt_level
                .or(config.model.optimization_level)
                .unwrap_or(defaults.optimization_level),
            device: self.device.or(config.model.device).unwrap_or(defaults.device),
            text_device: self.text_device.or(config.model.text_device),
            tensorrt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn flags_win_over_the_config_which_wins_over_defaults() {
        let config = Config::parse(
            "[model]\ndevice = \"cuda:1\"\noptimization_level = 1\n[tensorrt]\nfp16 = true\nmax_batch = 4\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let o = SessionArgs::default().options(2, &config).unwrap();
        assert_eq!((o.device, o.optimization_level, o.intra_threads), (Device::Cuda(1), 1, 2));
        assert!(o.tensorrt.fp16 && o.tensorrt.max_batch == 4 && o.tensorrt.opt_batch == 4);
        let flags = SessionArgs {
            device: Some(Device::Cpu),
            graph_opt_level: Some(0),
            trt_fp16: Some(false),
            trt_max_batch: Some(2),
            ..SessionArgs::default()
        };
        let o = flags.options(0, &config).unwrap();
        assert_eq!((o.device, o.optimization_level), (Device::Cpu, 0));
        assert!(!o.tensorrt.fp16 && o.tensorrt.max_batch == 2 && o.tensorrt.opt_batch == 2);
        let o = SessionArgs::default().options(0, &Config::default()).unwrap();
        assert_eq!(o, SessionOptions { intra_threads: 0, ..SessionOptions::default() });
    }

    #[test]
    fn a_bad_profile_is_a_usage_error() {
        let config = Config::parse("[tensorrt]\nmin_batch = 4\nopt_batch = 2\n", Path::new("c.toml")).unwrap();
        let e = SessionArgs::default().options(0, &config).unwrap_err();
        assert!(e.is::<UsageError>() && e.to_string().contains("4/2/8"), "{e}");
    }
}
