//! The web console: one dependency-free page (`assets/`: HTML, CSS and JavaScript written
//! by hand, no build step) embedded in the binary and served on the core's HTTP listener
//! at `GET /` (to a browser) and `/ui/...`, when `[http] console = true` (the default).
//!
//! The page is a client of the APIs every core already has: `POST /graphql` (the token's
//! repositories), the query jobs (`…/queryjobs`: search, histogram, live, progress,
//! cancel) and `GET /api/v1/cluster`. It keeps the read token in the tab's
//! `sessionStorage` and sends it as `Authorization: Bearer`; it needs no endpoint, state
//! or session of its own here.
//!
//! `GET /` also answers Elasticsearch clients (their root probe, `weir-http-ingest`):
//! only a request whose `Accept` names `text/html` (a browser's) gets the page; every
//! other request passes through untouched.
//!
//! Must never: serve anything but the embedded files, load or allow anything from another
//! origin (the Content-Security-Policy below: no inline script, no third-party request),
//! or see a token (the page talks to the APIs, which check it).

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Everything from this origin, nothing inline, nothing from elsewhere; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `app` with the console: `/ui/...` routes, and `GET /` answered with the page when the
/// request asks for HTML.
pub fn serve(app: Router) -> Router {
    let assets = Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/ui/{*rest}", get(not_found));
    app.merge(assets).layer(middleware::from_fn(page_at_root))
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn not_found() -> Response {
    let mut response = (StatusCode::NOT_FOUND, "no such console file; open / or /ui/\n").into_response();
    secure(response.headers_mut());
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    secure(response.headers_mut());
    response
}

/// The headers of every console response.
fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary: a browser asks again rather than keep an old one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// `GET /` (or `HEAD /`) from a browser: the page; anything else goes on to the router
/// (the Elasticsearch root probe among them).
async fn page_at_root(request: Request, next: Next) -> Response {
    if request.uri().path() == "/" && (request.method() == Method::GET || request.method() == Method::HEAD) && wants_html(request.headers()) {
        return index().await;
    }
    next.run(request).await
}

/// Whether `Accept` names `text/html` (a browser navigating; `*/*` alone is curl's or a
/// client library's and keeps the JSON).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// Stands for the ingest router: its own `GET /` (the Elasticsearch probe) and a route.
    fn app(console: bool) -> Router {
        let base = Router::new()
            .route("/", get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"tagline\":\"You Know, for Search\"}") }))
            .route("/health", get(|| async { "ok" }));
        if console { serve(base) } else { base }
    }

    async fn get_with(app: Router, path: &str, accept: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut request = axum::http::Request::get(path);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
    }

    const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[tokio::test]
    async fn a_browser_gets_the_page_at_root_and_clients_keep_the_elasticsearch_json() {
        // (accept, expected content type prefix)
        let table: &[(Option<&str>, &str)] = &[
            (Some(BROWSER), "text/html"),
            (Some("TEXT/HTML"), "text/html"),
            (None, "application/json"),
            (Some("*/*"), "application/json"),
            (Some("application/vnd.elasticsearch+json; compatible-with=8"), "application/json"),
            (Some("application/json, text/plain"), "application/json"),
        ];
        for &(accept, expected) in table {
            let (status, headers, body) = get_with(app(true), "/", accept).await;
            assert_eq!(status, StatusCode::OK, "{accept:?}");
            let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
            assert!(content_type.starts_with(expected), "{accept:?}: {content_type}");
            if expected == "text/html" {
                assert!(body.contains("<script src=\"/ui/app.js\""), "{body}");
                assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            } else {
                assert!(body.contains("You Know, for Search") && !headers.contains_key(header::CONTENT_SECURITY_POLICY), "{accept:?}: {body}");
            }
        }
        let (status, _, body) = get_with(app(true), "/health", Some(BROWSER)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "other routes pass through");
    }

    #[tokio::test]
    async fn every_file_has_its_type_and_the_strict_policy() {
        for (path, content_type, needle) in [
            ("/ui/", "text/html; charset=utf-8", "<!doctype html>"),
            ("/ui", "text/html; charset=utf-8", "<!doctype html>"),
            ("/ui/app.js", "text/javascript; charset=utf-8", "sessionStorage"),
            ("/ui/app.css", "text/css; charset=utf-8", "body"),
        ] {
            let (status, headers, body) = get_with(app(true), path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(policy.starts_with("default-src 'self';") && !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
            assert!(body.to_lowercase().contains(&needle.to_lowercase()), "{path}");
        }
        let (status, headers, _) = get_with(app(true), "/ui/nothing.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[tokio::test]
    async fn the_page_loads_nothing_from_elsewhere_and_runs_no_inline_script() {
        let lower = INDEX_HTML.to_lowercase();
        assert!(!lower.contains("http://") && !lower.contains("https://") && !lower.contains("//cdn"), "only this origin's files");
        assert_eq!(lower.matches("<script").count(), 1, "one script, by src");
        assert!(!inline_handler(&lower), "no inline event handlers");
        assert!(!lower.contains("style="), "no inline styles (style-src 'self')");
        for text in [APP_JS, APP_CSS] {
            // The SVG namespace is a name, never fetched.
            let text = text.replace("'http://www.w3.org/2000/svg'", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "no third-party URLs");
        }
        assert!(!APP_JS.contains("localStorage") && !APP_JS.contains("document.cookie"), "the token stays in the tab (sessionStorage)");
    }

    /// `onclick=`-like attributes in the HTML.
    fn inline_handler(html: &str) -> bool {
        html.split(|c: char| c.is_whitespace()).any(|word| word.starts_with("on") && word.contains('='))
    }

    #[tokio::test]
    async fn console_off_means_no_ui_routes_and_root_stays_elasticsearch() {
        let (status, _, _) = get_with(app(false), "/ui/", Some(BROWSER)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = get_with(app(false), "/ui/app.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, headers, _) = get_with(app(false), "/", Some(BROWSER)).await;
        assert_eq!((status, headers[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "application/json"));
    }
}
