//! Security headers: plugin content is served in an opaque origin, the server's own pages
//! refuse to be framed and run no script.
//!
//! Plugin pages and widget HTML get `Content-Security-Policy: sandbox allow-scripts
//! allow-forms allow-popups`: the browser gives them a unique origin, so a plugin's script
//! cannot read the admin pages (no same-origin reads), is sent no cookie, and cannot reach the
//! admin page's CSRF value. The admin pages get a CSP without any script and may not be framed.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// The CSP of every plugin page and widget: a sandbox without `allow-same-origin`.
pub const PLUGIN_CONTENT_CSP: &str = "sandbox allow-scripts allow-forms allow-popups";

/// The CSP of the admin pages: no script, styles and forms only from the server, no framing.
pub const ADMIN_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The CSP of the server's own pages that show plugin widgets (the dashboard): widgets are
/// sandboxed frames (`srcdoc`), the page itself may not be framed.
pub const HOST_PAGE_CSP: &str = "frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

fn set(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// Marks a response as plugin content (see [`PLUGIN_CONTENT_CSP`]).
pub fn plugin_content(mut response: Response) -> Response {
    set(response.headers_mut(), PLUGIN_CONTENT_CSP);
    response
}

/// Marks a response as one of the server's own pages: `csp`, and no framing.
fn own_page(mut response: Response, csp: &'static str) -> Response {
    set(response.headers_mut(), csp);
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Middleware for the admin pages (see [`ADMIN_CSP`]).
pub async fn admin_pages(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    own_page(next.run(request).await, ADMIN_CSP)
}

/// Marks a response as a host page that frames widgets (see [`HOST_PAGE_CSP`]).
pub fn host_page(response: Response) -> Response {
    own_page(response, HOST_PAGE_CSP)
}
