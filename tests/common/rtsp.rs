//! An in-process RTSP server (gst-rtsp-server) on 127.0.0.1 with its own GLib main loop thread, standing in for
//! a camera; stopped on drop, or with [`RtspServer::stop`] to take the camera down in the middle of a test.
//!
//! Included by the tests that need it with `#[path = "common/rtsp.rs"] mod rtsp;`.
#![allow(dead_code)]

use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;

/// A live H.264 stream, 20 fps, a key frame every half second so a new client starts quickly.
pub const LIVE_H264: &str = "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=20/1 \
     ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bframes=0 \
     ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

pub struct RtspServer {
    /// The port it listens on.
    pub port: u16,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    server: rtsp_server::RTSPServer,
    source_id: Option<glib::SourceId>,
    thread: Option<JoinHandle<()>>,
}

impl RtspServer {
    /// Serves [`LIVE_H264`] at `mount`; `port` 0 picks a free port (read back with `.port`).
    pub fn start(port: u16, mount: &str) -> RtspServer {
        Self::serve(port, mount, LIVE_H264)
    }

    /// Serves the gst-rtsp-server launch description `launch` (a bin whose payloader is `pay0`) at `mount`.
    pub fn serve(port: u16, mount: &str, launch: &str) -> RtspServer {
        gst::init().unwrap();
        let context = glib::MainContext::new();
        let server = rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = rtsp_server::RTSPMediaFactory::new();
        factory.set_launch(launch);
        factory.set_shared(true);
        server.mount_points().unwrap().add_factory(mount, factory);
        let source_id = server.attach(Some(&context)).expect("RTSP server binds");
        let port = u16::try_from(server.bound_port()).unwrap();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let thread = {
            let main_loop = main_loop.clone();
            std::thread::Builder::new().name(format!("rtsp-{port}")).spawn(move || main_loop.run()).unwrap()
        };
        RtspServer { port, context, main_loop, server, source_id: Some(source_id), thread: Some(thread) }
    }

    /// Drops every client connection and closes the listening socket.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.server.client_filter(Some(&mut |_, _| rtsp_server::RTSPFilterResult::Remove));
        if let Some(id) = self.source_id.take()
            && let Some(source) = self.context.find_source_by_id(&id)
        {
            source.destroy();
        }
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shut();
        }
    }
}
