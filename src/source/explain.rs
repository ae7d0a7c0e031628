//! GStreamer's errors about a source, in words a camera installer can act on.
//!
//! GStreamer says what failed inside it ("Internal data stream error", "streaming stopped, reason error (-5)");
//! the user needs to know what is wrong with the camera or the URL. The cases:
//! - **401**: rtspsrc and souphttpsrc post `RESOURCE/NOT_AUTHORIZED` (or their text has "(401)"): the camera
//!   refused the user name and password, or wants some. This is not a network fault, and retrying will not fix
//!   it, so [`Explained::auth`] is set and the caller says so once.
//! - **Other HTTP statuses**: souphttpsrc's "File not found (404), URL: …, Redirect to: (NULL)" becomes "the
//!   server answered 404 File not found".
//! - **Flow errors**: souphttpsrc reports a refused connection only as the flow error `-5` of its streaming
//!   thread, and rtspsrc as "Failed to connect. (Generic error)". The host and port are then tried once here (a
//!   TCP connect with a short timeout) to name the cause: refused, timed out, or a name that does not resolve.
//!   Other flow codes (`not-linked`, `not-negotiated`) are named in words too.
//!
//! Anything else keeps GStreamer's own text, "summary (element: detail)".

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::SourceKind;

/// How long [`probe`] waits for a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// One GStreamer error about a source, as the bus gave it (password already removed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BusError<'a> {
    /// The kind of source it came from.
    pub kind: SourceKind,
    /// Whether the URL carries a user name and password.
    pub has_credentials: bool,
    /// The element that posted it (`rtspsrc1`, `source`).
    pub from: &'a str,
    /// The error's message ("Unauthorized", "Internal data stream error.").
    pub summary: &'a str,
    /// The useful line of the debug text ("Unauthorized (401), URL: …", "streaming stopped, reason error (-5)").
    pub detail: &'a str,
    /// The error is `GST_RESOURCE_ERROR_NOT_AUTHORIZED`.
    pub not_authorized: bool,
}

/// What to do about an authentication failure, said once by the caller after [`Explained::message`].
pub(crate) fn auth_advice(has_credentials: bool) -> &'static str {
    if has_credentials {
        "check the user name and password in the URL"
    } else {
        "put a user name and password in the URL, as rtsp://user:password@host/path"
    }
}

/// The error in words, and whether it is an authentication failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Explained {
    pub message: String,
    pub auth: bool,
}

/// What `e` means, in words. `reach` connects to the source's host and port and says why that fails (see
/// [`probe`]); it is called only for errors that say nothing more than "could not connect".
pub(crate) fn explain(e: &BusError<'_>, reach: impl FnOnce() -> Option<(String, String)>) -> Explained {
    let network = matches!(e.kind, SourceKind::Rtsp | SourceKind::Http);
    let words = |message: String| Explained { message, auth: false };
    if network && (e.not_authorized || e.detail.contains("(401)") || e.summary.contains("(401)")) {
        let message = if e.has_credentials {
            "authentication failed: the camera refused the user name and password of the URL (401 Unauthorized)"
        } else {
            "authentication required: the camera asks for a user name and password (401 Unauthorized)"
        };
        return Explained { message: message.into(), auth: true };
    }
    if e.kind == SourceKind::Http
        && let Some((status, code)) = http_status(e.detail)
    {
        let hint = match code {
            404 | 410 => "; check the path of the URL",
            403 => "; the account may not be allowed to view this stream",
            500..=599 => "; the server failed, try again later or look at its logs",
            _ => "",
        };
        return words(format!("the server answered {code} {status}{hint}"));
    }
    let failed_to_connect = e.kind == SourceKind::Rtsp && e.detail.contains("Failed to connect");
    if let Some(code) = flow_code(e.detail).or(failed_to_connect.then_some(-5)) {
        return words(match code {
            -5 if network => match reach() {
                Some((address, why)) => {
                    format!(
                        "cannot connect to {address}: {why}; check that the camera is on and the URL's host and port"
                    )
                }
                None => "the connection failed or the server sent no video (GStreamer gives no reason: flow error \
                         -5); check the URL in a player such as VLC"
                    .into(),
            },
            -5 => format!(
                "the stream stopped with an error that GStreamer does not explain (flow error -5 in {})",
                e.from
            ),
            -4 => "the pipeline cannot take the stream's format (not-negotiated): its codec, size or colour format \
                   is not one this pipeline template handles"
                .into(),
            -1 => "nothing took the stream's data (not-linked): no decoder for its codec is installed, or it has no \
                   video track"
                .into(),
            -2 => "the pipeline was stopped while the stream was playing (flushing)".into(),
            _ => format!("{} ({}: {})", e.summary, e.from, e.detail),
        });
    }
    if e.detail.is_empty() {
        words(format!("{} ({})", e.summary, e.from))
    } else {
        words(format!("{} ({}: {})", e.summary, e.from, e.detail))
    }
}

/// The flow return in "streaming stopped, reason error (-5)".
fn flow_code(detail: &str) -> Option<i32> {
    let rest = detail.split("streaming stopped, reason ").nth(1)?;
    let inside = rest.rsplit_once('(')?.1.split(')').next()?;
    inside.trim().parse().ok()
}

/// souphttpsrc's "File not found (404), URL: http://…, Redirect to: (NULL)": ("File not found", 404).
fn http_status(detail: &str) -> Option<(&str, u16)> {
    let head = detail.split(", URL: ").next()?;
    let (text, code) = head.rsplit_once(" (")?;
    let code: u16 = code.strip_suffix(')')?.parse().ok()?;
    (100..=599).contains(&code).then_some((text.trim(), code))
}

/// Tries a TCP connection to the host and port of `uri` (the default port of its scheme when it gives none), and
/// returns ("host:port", why it failed); `None` when it connects (the fault is elsewhere) or the URI has no host.
pub(crate) fn probe(uri: &str) -> Option<(String, String)> {
    let (scheme, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        "rtsps" => 322,
        _ => 554,
    };
    // "[::1]:8554" has a port, "[::1]" has none.
    let has_port = if host_port.starts_with('[') { host_port.contains("]:") } else { host_port.contains(':') };
    let address = if has_port { host_port.to_string() } else { format!("{host_port}:{default_port}") };
    let addrs = match address.to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Some((address, format!("the host name does not resolve ({e})"))),
    };
    let mut why = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, PROBE_TIMEOUT) {
            Ok(_) => return None,
            Err(e) => {
                why.get_or_insert(match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => "connection refused (nothing listens on that port)".into(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        format!(
                            "no answer within {:.1} s (a firewall, or the host is down)",
                            PROBE_TIMEOUT.as_secs_f64()
                        )
                    }
                    _ => e.to_string(),
                });
            }
        }
    }
    Some((address, why.unwrap_or_else(|| "the host name has no address".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus<'a>(kind: SourceKind, from: &'a str, summary: &'a str, detail: &'a str) -> BusError<'a> {
        BusError { kind, has_credentials: true, from, summary, detail, not_authorized: false }
    }

    fn never() -> Option<(String, String)> {
        panic!("no probe for this error")
    }

    #[test]
    fn a_401_is_an_authentication_failure_in_words() {
        let e = bus(SourceKind::Rtsp, "rtspsrc1", "Unauthorized", "Unauthorized (401)");
        let x = explain(&e, never);
        assert!(x.auth && x.message.starts_with("authentication failed: the camera refused"), "{x:?}");
        let e = BusError { has_credentials: false, ..e };
        assert!(explain(&e, never).message.starts_with("authentication required"));
        let e = BusError { not_authorized: true, detail: "", ..bus(SourceKind::Http, "source", "Unauthorized", "") };
        assert!(explain(&e, never).auth);
        // A file is never a camera that wants a password.
        assert!(!explain(&bus(SourceKind::File, "f", "x", "Unauthorized (401)"), never).auth);
    }

    #[test]
    fn http_statuses_and_flow_errors_in_words() {
        let e = bus(
            SourceKind::Http,
            "source",
            "File not found",
            "File not found (404), URL: http://***@h/x.mp4, Redirect to: (NULL)",
        );
        assert_eq!(explain(&e, never).message, "the server answered 404 File not found; check the path of the URL");
        let e = bus(SourceKind::Http, "source", "Internal data stream error.", "streaming stopped, reason error (-5)");
        let x = explain(&e, || Some(("127.0.0.1:9".into(), "connection refused".into())));
        assert_eq!(
            x.message,
            "cannot connect to 127.0.0.1:9: connection refused; check that the camera is on and the URL's host and port"
        );
        assert!(!x.message.contains("-5") && !x.auth);
        assert!(explain(&e, || None).message.contains("flow error -5"));
        let e = bus(SourceKind::Rtsp, "rtspsrc1", "Could not open resource", "Failed to connect. (Generic error)");
        assert!(
            explain(&e, || Some(("h:554".into(), "timed out".into()))).message.starts_with("cannot connect to h:554")
        );
        let e = bus(
            SourceKind::File,
            "qtdemux0",
            "Internal data stream error.",
            "streaming stopped, reason not-negotiated (-4)",
        );
        assert!(explain(&e, never).message.contains("not-negotiated"));
        let e = bus(SourceKind::File, "d", "Internal data stream error.", "streaming stopped, reason weird (-99)");
        assert_eq!(
            explain(&e, never).message,
            "Internal data stream error. (d: streaming stopped, reason weird (-99))"
        );
        let e = bus(SourceKind::File, "d", "Something", "");
        assert_eq!(explain(&e, never).message, "Something (d)");
    }

    #[test]
    fn the_probe_names_a_refused_port_and_a_bad_host() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (address, why) = probe(&format!("http://user:pw@127.0.0.1:{port}/video")).unwrap();
        assert_eq!(address, format!("127.0.0.1:{port}"));
        assert!(why.starts_with("connection refused"), "{why}");
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listening.local_addr().unwrap().port();
        assert_eq!(probe(&format!("rtsp://127.0.0.1:{port}/live")), None, "it connects: the fault is elsewhere");
        let (_, why) = probe("rtsp://no-such-host.invalid/live").unwrap();
        assert!(why.contains("does not resolve"), "{why}");
        assert_eq!(probe("rtsp://no-such-host.invalid/live").unwrap().0, "no-such-host.invalid:554");
    }
}
