//! What browsers are told on every response: a Content-Security-Policy for the kind of page,
//! `Cache-Control: no-store`, HSTS when the listener is TLS, and CORS for the configured
//! origins only. The request middleware applies it; this module decides it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use poem::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use poem::{Request, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The browser-facing settings the app is built with.
#[derive(Debug, Clone, Default)]
pub struct BrowserParams {
    /// Origins whose pages may call the API (`https://app.example.com`); empty: no CORS
    /// header is ever sent.
    pub cors_allowed_origins: Vec<String>,
    /// `max-age` of `Strict-Transport-Security`; `None` on a plain HTTP listener, where the
    /// header would be ignored and could mislead.
    pub hsts_max_age_secs_opt: Option<u64>,
}

/// Methods a cross-origin page may use, and the request headers it may send.
const CORS_ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, x-request-id, traceparent";
/// Response headers a cross-origin page may read besides the CORS-safelisted ones.
const CORS_EXPOSE_HEADERS: &str =
    "x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset";
/// How long a browser may cache a preflight answer.
const CORS_MAX_AGE_SECS: &str = "600";

/// Non-HTML responses (JSON, CSV, text): nothing may load, nothing may frame them.
const NON_HTML_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
                            form-action 'none'";

/// The decided headers; built once per app.
#[derive(Debug, Clone)]
pub(crate) struct BrowserPolicy {
    /// HTML pages of the API (the audit report): no script at all, only the report's own
    /// stylesheet by hash, inline SVG drawn without any fetch.
    page_csp: HeaderValue,
    /// Swagger UI: its two inline scripts by hash; its inline stylesheet and the styles its
    /// components set need `'unsafe-inline'` for styles (never for scripts); its icons are
    /// `data:` images; "try it out" calls this origin.
    docs_csp: HeaderValue,
    non_html_csp: HeaderValue,
    hsts_opt: Option<HeaderValue>,
    cors_allowed_origins: Vec<HeaderValue>,
}

impl BrowserPolicy {
    /// Decides the headers for an app whose `/docs` page is `docs_html` and whose other HTML
    /// pages use only `page_styles` as inline stylesheets.
    pub(crate) fn new(params: &BrowserParams, docs_html: &str, page_styles: &[&str]) -> Self {
        let style_hashes: Vec<String> = page_styles.iter().map(|style| csp_hash(style)).collect();
        let page_csp = format!(
            "default-src 'none'; style-src {}; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
            style_hashes.join(" ")
        );
        let script_hashes: Vec<String> = inline_elements(docs_html, "script")
            .into_iter()
            .map(csp_hash)
            .collect();
        let docs_csp = format!(
            "default-src 'none'; script-src {}; style-src 'unsafe-inline'; \
             img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
            script_hashes.join(" ")
        );
        BrowserPolicy {
            page_csp: header_value(&page_csp),
            docs_csp: header_value(&docs_csp),
            non_html_csp: HeaderValue::from_static(NON_HTML_CSP),
            hsts_opt: params
                .hsts_max_age_secs_opt
                .map(|max_age| header_value(&format!("max-age={max_age}"))),
            cors_allowed_origins: params
                .cors_allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect(),
        }
    }

    /// Returns the request's `Origin` when it is on the allow-list; `None` for same-origin
    /// and non-browser requests, for refused origins, and always when no origin is configured.
    pub(crate) fn allowed_origin(&self, request: &Request) -> Option<HeaderValue> {
        let origin = request.headers().get(header::ORIGIN)?;
        let origin_text = origin.to_str().ok()?;
        self.cors_allowed_origins
            .iter()
            .any(|allowed| {
                allowed
                    .to_str()
                    .is_ok_and(|allowed| allowed.eq_ignore_ascii_case(origin_text))
            })
            .then(|| origin.clone())
    }

    /// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) when origins
    /// are configured: `204` with the allowed methods and headers for an allowed origin, `403`
    /// for any other. Returns `None` for every other request, and for every request when no
    /// origin is configured (a preflight is then refused like any other `OPTIONS` request).
    pub(crate) fn preflight(&self, request: &Request) -> Option<Result<Response, ApiError>> {
        let is_preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ORIGIN)
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if self.cors_allowed_origins.is_empty() || !is_preflight {
            return None;
        }
        let Some(origin) = self.allowed_origin(request) else {
            return Some(Err(ApiError::from_code(
                bulwark_core::ErrorCode::Forbidden,
                "origin: not allowed to call this API from a browser (http.cors_allowed_origins)",
            )));
        };
        let response = Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)
            .header(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(CORS_ALLOW_METHODS),
            )
            .header(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(CORS_ALLOW_HEADERS),
            )
            .header(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(CORS_MAX_AGE_SECS),
            )
            .finish();
        Some(Ok(response))
    }

    /// Adds the headers to a response of `path`: CSP by kind of page (unless the handler set
    /// one), `Cache-Control: no-store` (unless set), HSTS on TLS, and the CORS headers for an
    /// allowed origin.
    pub(crate) fn apply(
        &self,
        path: &str,
        allowed_origin_opt: Option<HeaderValue>,
        headers: &mut HeaderMap,
    ) {
        let is_html = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|content_type| content_type.starts_with("text/html"));
        let csp = match (is_html, path == "/docs" || path.starts_with("/docs/")) {
            (true, true) => &self.docs_csp,
            (true, false) => &self.page_csp,
            (false, _) => &self.non_html_csp,
        };
        if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
        }
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let Some(hsts) = &self.hsts_opt {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if self.cors_allowed_origins.is_empty() {
            return;
        }
        // The answer depends on the Origin header whenever CORS is on, allowed or not.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = allowed_origin_opt {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(CORS_EXPOSE_HEADERS),
            );
        }
    }
}

/// Returns a CSP hash source (`'sha256-…'`) for an inline script or stylesheet.
fn csp_hash(content: &str) -> String {
    format!(
        "'sha256-{}'",
        BASE64.encode(Sha256::digest(content.as_bytes()))
    )
}

/// Returns the text of every `<tag …>…</tag>` element of `html` that has no `src`, as a
/// browser reads it for CSP: from the end of the opening tag to the first closing tag (in any
/// case), whatever the text holds before it, such as a `"<script"` in a string.
fn inline_elements<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    // ASCII lowercasing keeps every byte offset, so positions found in it index `html`.
    let lowercase = html.to_ascii_lowercase();
    let (open, close) = (format!("<{tag}"), format!("</{tag}"));
    let mut contents = Vec::new();
    let mut from = 0;
    while let Some(start) = lowercase[from..].find(&open).map(|at| from + at) {
        let Some(tag_end) = lowercase[start..].find('>').map(|at| start + at) else {
            break;
        };
        let Some(body_end) = lowercase[tag_end..].find(&close).map(|at| tag_end + at) else {
            break;
        };
        if !lowercase[start..tag_end].contains("src=") {
            contents.push(&html[tag_end + 1..body_end]);
        }
        from = body_end + close.len();
    }
    contents
}

/// Returns a header value of text this module built from ASCII parts.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(NON_HTML_CSP))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = "<html><head><style>body{}</style><script charset=\"UTF-8\">var a = \
                        '<script>';</script></head><body><script>\n    start(a);\n</SCRIPT>\
                        <script src=\"/x.js\"></script></body></html>";

    fn policy(origins: &[&str], hsts_opt: Option<u64>) -> BrowserPolicy {
        BrowserPolicy::new(
            &BrowserParams {
                cors_allowed_origins: origins.iter().map(|origin| (*origin).to_owned()).collect(),
                hsts_max_age_secs_opt: hsts_opt,
            },
            DOCS,
            &["body{margin:0}"],
        )
    }

    fn headers_for(policy: &BrowserPolicy, path: &str, content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        policy.apply(path, None, &mut headers);
        headers
    }

    /// Proves the hash is the CSP form of SHA-256 over the exact text (a known vector).
    #[test]
    fn csp_hash_is_base64_sha256() {
        assert_eq!(
            csp_hash("alert('Hello, world.');"),
            "'sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng='"
        );
    }

    /// Proves inline scripts are found with their exact text up to the first closing tag in any
    /// case, even when the text holds `<script`, and external ones are skipped.
    #[test]
    fn inline_scripts_are_found() {
        assert_eq!(
            inline_elements(DOCS, "script"),
            ["var a = '<script>';", "\n    start(a);\n"]
        );
        assert_eq!(inline_elements(DOCS, "style"), ["body{}"]);
    }

    /// Proves each kind of response gets its policy: scripts by hash on `/docs`, no script and
    /// the stylesheet by hash on other pages, nothing at all for JSON; `no-store` everywhere;
    /// HSTS only when configured.
    #[test]
    fn policies_by_kind_of_response() {
        let plain = policy(&[], None);
        let docs = headers_for(&plain, "/docs", "text/html; charset=utf-8");
        let docs_csp = docs[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            docs_csp.contains(&csp_hash("var a = '<script>';")),
            "{docs_csp}"
        );
        assert!(
            docs_csp.contains(&csp_hash("\n    start(a);\n")),
            "{docs_csp}"
        );
        assert!(
            !docs_csp.contains("script-src 'unsafe-inline'"),
            "{docs_csp}"
        );
        let page = headers_for(&plain, "/v1/audits/a/report.html", "text/html");
        let page_csp = page[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(page_csp.starts_with("default-src 'none'"), "{page_csp}");
        assert!(page_csp.contains(&csp_hash("body{margin:0}")), "{page_csp}");
        assert!(!page_csp.contains("script-src") && !page_csp.contains("unsafe"));
        let json = headers_for(&plain, "/v1/jobs", "application/json");
        assert_eq!(json[header::CONTENT_SECURITY_POLICY], NON_HTML_CSP);
        for headers in [&docs, &page, &json] {
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            assert!(!headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
            assert!(!headers.contains_key(header::VARY));
        }
        let tls = headers_for(&policy(&[], Some(600)), "/live", "application/json");
        assert_eq!(tls[header::STRICT_TRANSPORT_SECURITY], "max-age=600");
    }

    /// Proves CORS headers go only to an allowed origin, matched without regard to case, and
    /// that a response still varies on Origin when the origin was refused.
    #[test]
    fn cors_only_for_allowed_origins() {
        let cors = policy(&["https://app.example.com"], None);
        let request = |origin: &str| Request::builder().header(header::ORIGIN, origin).finish();
        let allowed = cors.allowed_origin(&request("https://APP.example.com"));
        assert!(allowed.is_some());
        assert!(
            cors.allowed_origin(&request("https://evil.example"))
                .is_none()
        );
        assert!(
            policy(&[], None)
                .allowed_origin(&request("https://app.example.com"))
                .is_none()
        );
        let mut headers = HeaderMap::new();
        cors.apply("/v1/jobs", allowed, &mut headers);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://APP.example.com"
        );
        assert_eq!(headers[header::VARY], "Origin");
        let mut refused = HeaderMap::new();
        cors.apply("/v1/jobs", None, &mut refused);
        assert!(!refused.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(refused[header::VARY], "Origin");
    }
}
