//! Republishing the annotated video over RTSP, for live viewing (`watch --serve-rtsp`).
//!
//! One RTSP server per process, one mount per source (`rtsp://ADDR:PORT/<source>`). Each mount is a shared
//! media: `appsrc ! <encoder> ! rtph264pay`, where the encoder is the pipeline template's `encoder_live`
//! (x264enc zerolatency in `generic`, nvv4l2h264enc on a Jetson). Frames are pushed only while a client
//! watches; the appsrc is leaky (drops the oldest of at most [`MAX_QUEUED`] frames), so a slow viewer never slows
//! detection. The server binds to the address given, 127.0.0.1 unless the user says otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;

use super::SinkError;
use crate::gst::{EncoderPurpose, encoder_bin, generic_encoder};
use crate::picture::{Picture, PixelFormat};

/// Frames an appsrc holds before dropping the oldest.
pub const MAX_QUEUED: u64 = 2;
/// Address used when `--serve-rtsp` gives only a port.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1";

/// The RTSP server and its GLib main loop thread.
pub struct RtspPublisher {
    address: String,
    port: u16,
    server: rtsp_server::RTSPServer,
    main_loop: gst::glib::MainLoop,
    context: gst::glib::MainContext,
    source_id: Option<gst::glib::SourceId>,
    thread: Option<JoinHandle<()>>,
    mounted: Mutex<HashMap<String, RtspFeed>>,
    /// The encoder fragment of every mount (raw video in, parsed H.264 out).
    encoder: String,
}

impl std::fmt::Debug for RtspPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspPublisher").field("address", &self.address).field("port", &self.port).finish()
    }
}

/// One source's feed: push annotated frames into it.
#[derive(Clone)]
pub struct RtspFeed {
    appsrc: Arc<Mutex<Option<gst_app::AppSrc>>>,
    format: PixelFormat,
    width: u32,
    height: u32,
    pub url: String,
}

impl std::fmt::Debug for RtspFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspFeed").field("url", &self.url).finish()
    }
}

/// Splits `ADDR:PORT` or `PORT` (then on [`DEFAULT_ADDRESS`]).
pub fn parse_listen(arg: &str) -> Result<(String, u16), String> {
    let (addr, port) = match arg.rsplit_once(':') {
        Some((a, p)) => (a.trim_matches(['[', ']']).to_string(), p),
        None => (DEFAULT_ADDRESS.to_string(), arg),
    };
    let port = port.parse::<u16>().map_err(|_| format!("--serve-rtsp {arg:?}: expected PORT or ADDRESS:PORT"))?;
    Ok((if addr.is_empty() { DEFAULT_ADDRESS.to_string() } else { addr }, port))
}

impl RtspPublisher {
    /// Starts the server on `address:port` (port 0: any free port, see [`RtspPublisher::port`]) with the generic
    /// template's live encoder (x264enc, zerolatency).
    pub fn start(address: &str, port: u16) -> Result<RtspPublisher, SinkError> {
        RtspPublisher::start_with_encoder(address, port, &generic_encoder(EncoderPurpose::Live))
    }

    /// Starts the server with `encoder`, a gst-launch fragment from raw video to parsed H.264 (a template's
    /// `encoder_live`, from [`crate::gst::usable_encoder`]). An encoder that cannot be instantiated here is
    /// replaced by the generic one, with a warning: the media is only built when the first viewer comes, too late
    /// to say so clearly.
    pub fn start_with_encoder(address: &str, port: u16, encoder: &str) -> Result<RtspPublisher, SinkError> {
        gst::init().map_err(|e| SinkError::GstInit(e.to_string()))?;
        let context = gst::glib::MainContext::new();
        let server = rtsp_server::RTSPServer::new();
        server.set_address(address);
        server.set_service(&port.to_string());
        let source_id = server.attach(Some(&context)).map_err(|e| SinkError::Video {
            path: format!("rtsp://{address}:{port}").into(),
            message: format!("cannot listen ({e}); is the port in use? choose another with --serve-rtsp ADDR:PORT"),
        })?;
        let port = u16::try_from(server.bound_port()).unwrap_or(port);
        let main_loop = gst::glib::MainLoop::new(Some(&context), false);
        let thread = {
            let main_loop = main_loop.clone();
            std::thread::Builder::new().name("rtsp-out".into()).spawn(move || main_loop.run()).map_err(|e| {
                SinkError::Video { path: format!("rtsp://{address}:{port}").into(), message: e.to_string() }
            })?
        };
        let encoder = match encoder_bin(encoder, "--serve-rtsp", EncoderPurpose::Live) {
            Ok(_) => encoder.to_string(),
            Err(e) => {
                let generic = generic_encoder(EncoderPurpose::Live);
                tracing::warn!(error = %e, fallback = %generic, "using the generic software encoder for RTSP");
                generic
            }
        };
        tracing::info!(address, port, %encoder, "serving annotated video over RTSP");
        Ok(RtspPublisher {
            address: address.to_string(),
            port,
            server,
            main_loop,
            context,
            source_id: Some(source_id),
            thread: Some(thread),
            mounted: Mutex::new(HashMap::new()),
            encoder,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The encoder fragment every mount uses (after any fallback).
    pub fn encoder(&self) -> &str {
        &self.encoder
    }

    /// The RGB feed for `name` at `width` x `height`, mounting it on first use.
    pub fn feed(&self, name: &str, width: u32, height: u32) -> Result<RtspFeed, SinkError> {
        self.feed_of(name, PixelFormat::Rgb, width, height)
    }

    /// The feed for `name` taking `format` frames of `width` x `height`, mounting it on first use.
    pub fn feed_of(&self, name: &str, format: PixelFormat, width: u32, height: u32) -> Result<RtspFeed, SinkError> {
        let mut mounted = self.mounted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = mounted.get(name) {
            return Ok(feed.clone());
        }
        let path = format!("/{name}");
        let factory = rtsp_server::RTSPMediaFactory::new();
        let encoder = &self.encoder;
        let caps_format = format.caps_name();
        factory.set_launch(&format!(
            "( appsrc name=src is-live=true format=time do-timestamp=true leaky-type=downstream max-buffers={MAX_QUEUED} \
             caps=video/x-raw,format={caps_format},width={width},height={height},framerate=0/1 \
             ! {encoder} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        ));
        factory.set_shared(true);
        let slot: Arc<Mutex<Option<gst_app::AppSrc>>> = Arc::new(Mutex::new(None));
        {
            let slot = slot.clone();
            factory.connect_media_configure(move |_, media| {
                let element = media.element();
                let appsrc = element
                    .downcast_ref::<gst::Bin>()
                    .and_then(|bin| bin.by_name_recurse_up("src"))
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = appsrc;
                let slot = slot.clone();
                media.connect_unprepared(move |_| {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
                });
            });
        }
        self.server
            .mount_points()
            .ok_or_else(|| SinkError::Video { path: path.clone().into(), message: "no mount points".into() })?
            .add_factory(&path, factory);
        let feed = RtspFeed {
            appsrc: slot,
            format,
            width,
            height,
            url: format!("rtsp://{}:{}{path}", self.address, self.port),
        };
        tracing::info!(url = %feed.url, "annotated stream available");
        mounted.insert(name.to_string(), feed.clone());
        Ok(feed)
    }
}

impl RtspFeed {
    /// Pushes one packed-or-strided RGB frame if a client is watching; returns whether it was sent.
    pub fn push(&self, rgb: &[u8], stride: usize) -> bool {
        let guard = self.appsrc.lock().unwrap_or_else(|e| e.into_inner());
        let Some(appsrc) = guard.as_ref() else {
            return false;
        };
        if self.format != PixelFormat::Rgb {
            return false;
        }
        let row = self.width as usize * 3;
        let mut data = Vec::with_capacity(row * self.height as usize);
        for y in 0..self.height as usize {
            match rgb.get(y * stride..y * stride + row) {
                Some(r) => data.extend_from_slice(r),
                None => return false,
            }
        }
        appsrc.push_buffer(gst::Buffer::from_mut_slice(data)).is_ok()
    }
}

impl RtspFeed {
    /// Pushes one picture of the feed's format and size if a client is watching; returns whether it was sent.
    pub fn push_picture(&self, picture: &Picture) -> bool {
        let l = picture.layout();
        if (l.format, l.width, l.height) != (self.format, self.width, self.height) {
            return false;
        }
        let guard = self.appsrc.lock().unwrap_or_else(|e| e.into_inner());
        let Some(appsrc) = guard.as_ref() else {
            return false;
        };
        appsrc.push_buffer(gst::Buffer::from_mut_slice(picture.data().to_vec())).is_ok()
    }
}

impl Drop for RtspPublisher {
    fn drop(&mut self) {
        self.server.client_filter(Some(&mut |_, _| rtsp_server::RTSPFilterResult::Remove));
        if let Some(id) = self.source_id.take()
            && let Some(source) = self.context.find_source_by_id(&id)
        {
            source.destroy();
        }
        // Quit from inside the loop: a quit() sent before the thread reached run() would be lost and the join
        // would hang.
        let main_loop = self.main_loop.clone();
        self.context.invoke(move || main_loop.quit());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_address_defaults_to_loopback() {
        assert_eq!(parse_listen("8554").unwrap(), ("127.0.0.1".to_string(), 8554));
        assert_eq!(parse_listen("0.0.0.0:9000").unwrap(), ("0.0.0.0".to_string(), 9000));
        assert!(parse_listen("x:y").is_err());
    }
}
