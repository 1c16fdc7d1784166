//! The stats page a frontend serves itself (HAProxy's `stats enable|uri|auth|realm|refresh|
//! hide-version`). The page is lb's HTML stats page; the control plane renders it through
//! the renderer `lb run` installs, so this tier does not depend on the admin module.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use http::header;

use crate::config::model::StatsPage;

/// Renders the page for one frontend's settings.
pub type StatsRenderer = Arc<dyn Fn(&StatsPage) -> String + Send + Sync>;

static RENDERER: OnceLock<StatsRenderer> = OnceLock::new();

/// Installs the renderer (once per process; later calls are ignored).
pub fn set_renderer(r: StatsRenderer) {
    let _ = RENDERER.set(r);
}

/// What a request to the stats URI gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The page (HTML).
    Page(String),
    /// 401 with `WWW-Authenticate: Basic realm=…`.
    Unauthorized,
    /// No renderer in this process: 503.
    Unavailable,
}

/// `None` when the request is not for the stats page (the path with its query does not
/// start with `stats uri`, as HAProxy matches).
pub fn answer(page: &StatsPage, head: &http::request::Parts) -> Option<Answer> {
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    if !target.starts_with(&page.uri) {
        return None;
    }
    if !page.auth.is_empty() && !authorized(page, head) {
        return Some(Answer::Unauthorized);
    }
    Some(match RENDERER.get() {
        Some(r) => Answer::Page(r(page)),
        None => Answer::Unavailable,
    })
}

fn authorized(page: &StatsPage, head: &http::request::Parts) -> bool {
    let Some(v) = head.headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let v = v.as_bytes();
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"basic ") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(v[6..].trim_ascii()) else {
        return false;
    };
    let Ok(creds) = std::str::from_utf8(&decoded) else {
        return false;
    };
    let Some((user, pass)) = creds.split_once(':') else {
        return false;
    };
    page.auth.iter().any(|(u, p)| u == user && p == pass)
}

/// The `WWW-Authenticate` value for `page`.
pub fn challenge(page: &StatsPage) -> String {
    format!("Basic realm=\"{}\"", page.realm.replace(['"', '\\'], ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, auth: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(target);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn matches_the_uri_prefix_and_checks_basic_auth() {
        let page = StatsPage {
            uri: "/stats".into(),
            auth: vec![("admin".into(), "s3cret".into())],
            ..StatsPage::default()
        };
        assert_eq!(answer(&page, &head("/other", None)), None);
        assert_eq!(
            answer(&page, &head("/stats", None)),
            Some(Answer::Unauthorized)
        );
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:nope")
        );
        assert_eq!(
            answer(&page, &head("/stats;csv", Some(&wrong))),
            Some(Answer::Unauthorized)
        );
        assert_eq!(challenge(&page), "Basic realm=\"HAProxy Statistics\"");
        let d = StatsPage::default();
        assert!(answer(&d, &head("/haproxy?stats", None)).is_some());
        assert_eq!(answer(&d, &head("/haproxy", None)), None);
    }
}
