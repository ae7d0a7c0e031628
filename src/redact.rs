//! Keeping secrets out of logs and events: camera URLs carry passwords.

/// The URL with any `user:password@` credentials replaced by `***@`; anything that is not a URL is returned as it is.
///
/// Every message, log line and event that names a source goes through this.
pub fn redact_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => format!("{}://***@{}{}", &s[..scheme_end], &authority[at + 1..], &rest[authority_end..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn removes_user_and_password() {
        assert_eq!(redact_url("rtsp://admin:hunter2@10.0.0.5:554/live"), "rtsp://***@10.0.0.5:554/live");
        assert_eq!(redact_url("rtsp://admin@cam/x"), "rtsp://***@cam/x");
    }

    #[test]
    fn leaves_other_things_alone() {
        assert_eq!(redact_url("rtsp://cam1/stream"), "rtsp://cam1/stream");
        assert_eq!(redact_url("footage/a@b.mp4"), "footage/a@b.mp4");
        assert_eq!(redact_url("http://cam/x?a=b@c"), "http://cam/x?a=b@c");
    }
}
