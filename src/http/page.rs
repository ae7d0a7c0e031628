//! `GET /`: one page (HTML, CSS and JS in `src/http/page/`, embedded in the binary; no CDN, no build step).

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

pub(super) async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], INDEX)
}

pub(super) async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT)
}

pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

#[cfg(test)]
mod tests {
    /// Every field a person fills in has a name a screen reader reads out (the form has no visible labels).
    #[test]
    fn every_visible_input_is_labelled() {
        let inputs: Vec<&str> = super::INDEX.split("<input").skip(1).map(|s| &s[..s.find('>').unwrap()]).collect();
        assert!(inputs.len() >= 6, "{inputs:?}");
        for input in inputs.iter().filter(|i| !i.contains("type=\"hidden\"")) {
            assert!(input.contains("aria-label=\"") && input.contains("title=\""), "unlabelled: <input{input}>");
        }
    }
}
