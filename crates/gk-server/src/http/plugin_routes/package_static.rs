//! A plugin's `static/` folder at `/plugins/<name>/static/<path>`: the files of a plugin
//! directory or package, with their content type, an ETag (a `304` for a match) and caching.
//!
//! Served like every other piece of plugin content: from the host's origin but under
//! `Content-Security-Policy: sandbox …` and `nosniff`, so an HTML or SVG file of a plugin runs
//! in an opaque origin and never as the admin. Only plugins with a directory (a manifest) have
//! one; the path is decoded, `..` and absolute parts are refused, and the file must resolve
//! (symlinks followed) inside the folder.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// The prefix of static paths, before the plugin's name.
const PREFIX: &str = "/plugins/";
/// How long a browser may keep a file without asking again.
const CACHE_CONTROL: &str = "public, max-age=300";
/// The largest file served.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// `(plugin, path inside static/)` when `path` is a static path.
pub(super) fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (plugin, rest) = rest.split_once('/')?;
    let file = rest.strip_prefix("static/")?;
    (!plugin.is_empty() && !file.is_empty()).then_some((plugin, file))
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what.to_owned())
}

/// The content type of a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// The path inside the plugin's directory that `relative` (as requested) names.
fn requested_path(relative: &str) -> Result<PathBuf, ApiError> {
    let decoded = percent_encoding::percent_decode_str(relative)
        .decode_utf8()
        .map_err(|_| not_found("the path is not UTF-8"))?;
    if decoded.contains(['\0', '\\']) {
        return Err(not_found("no such file"));
    }
    Ok(Path::new("static").join(decoded.as_ref()))
}

/// Serves `relative` from `plugin`'s `static/` folder.
pub(super) async fn serve(
    state: &AppState,
    plugin: &str,
    relative: &str,
    request_headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let source = state
        .manager
        .source(plugin)
        .ok()
        .flatten()
        .filter(|found| found.manifest.is_some())
        .ok_or_else(|| not_found("no plugin with a static folder by that name"))?;
    if !state.manager.is_enabled(plugin).unwrap_or(false) {
        return Err(not_found("the plugin is disabled"));
    }
    let requested = requested_path(relative)?;
    // Inside the plugin's directory, through no link (a link would reach any file).
    let (file, length) = gk_core::plugin_files::open(&source.dir, &requested, MAX_FILE_BYTES)
        .map_err(|_| not_found("no such file"))?;
    let metadata = file.metadata().map_err(|_| not_found("no such file"))?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("W/\"{length:x}-{modified:x}\"");
    let mut response = if request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag))
    {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let bytes = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut bytes = Vec::new();
            file.take(length).read_to_end(&mut bytes).map(|_| bytes)
        })
        .await
        .map_err(|_| not_found("no such file"))?
        .map_err(|_| not_found("no such file"))?;
        let mut response = Response::new(Body::from(bytes));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&requested)),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(super::super::headers::plugin_content(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_and_escapes() {
        assert_eq!(
            split("/plugins/stats/static/css/a.css"),
            Some(("stats", "css/a.css"))
        );
        assert_eq!(split("/plugins/stats/static/"), None);
        assert_eq!(split("/plugins/stats/page"), None);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("plugin");
        std::fs::create_dir_all(root.join("static/css")).unwrap();
        std::fs::write(root.join("static/css/a.css"), "a{}").unwrap();
        let open = |relative: &str| {
            gk_core::plugin_files::open(&root, &requested_path(relative)?, MAX_FILE_BYTES)
                .map_err(|_| not_found("no such file"))
        };
        assert!(open("css/a.css").is_ok());
        assert!(open("css%2Fa.css").is_ok());
        for escape in [
            "../plugin.yaml",
            "%2e%2e/x",
            "css/../../x",
            "/etc/passwd",
            "css",
        ] {
            assert!(open(escape).is_err(), "{escape}");
        }
        // A static folder that is a link (to `/`, say) serves nothing.
        let linked = dir.path().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink("/", linked.join("static")).unwrap();
        assert!(
            gk_core::plugin_files::open(&linked, &requested_path("etc/passwd").unwrap(), 1 << 20)
                .is_err()
        );
        assert_eq!(content_type(Path::new("a.SVG")), "image/svg+xml");
    }
}
