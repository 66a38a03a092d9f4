//! Reading a plugin file sent as multipart form data, for the JSON API's upload and the admin
//! page's upload form alike. A leaf: it knows multipart, not how either answers.

use axum::extract::Multipart;
use axum::http::StatusCode;

/// A plugin file sent as multipart form data.
#[derive(Debug)]
pub struct Upload {
    /// The file name of the `plugin` field (`<name>.wasm`, `<name>.zip`).
    pub file_name: String,
    /// Its content.
    pub content: Vec<u8>,
    /// The `signature` field, when one was sent and is not empty.
    pub signature: Option<Vec<u8>>,
    /// The `csrf` field (the admin page's form sends one).
    pub csrf: Option<String>,
}

/// Why an upload cannot be read: the sender's to fix, so its message is shown as it is.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UploadError {
    /// `413` past the body limit, else the multipart reader's status or `422`.
    pub status: StatusCode,
    /// `too_large` or `invalid_upload`.
    pub code: &'static str,
    /// What is wrong with the upload.
    pub message: String,
}

/// A multipart body that cannot be read: `413 too_large` past the limit, else `invalid_upload`.
fn multipart_error(error: axum::extract::multipart::MultipartError) -> UploadError {
    let status = error.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "invalid_upload"
    };
    UploadError {
        status,
        code,
        message: error.body_text(),
    }
}

fn bad_upload(message: impl ToString) -> UploadError {
    UploadError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_upload",
        message: message.to_string(),
    }
}

/// Reads fields `plugin` (a file) and optionally `signature` (and `csrf` when `form` is set:
/// the admin page's form); any other field, or none called `plugin`, is refused.
pub async fn read_upload(mut multipart: Multipart, form: bool) -> Result<Upload, UploadError> {
    let mut plugin: Option<(String, Vec<u8>)> = None;
    let (mut signature, mut csrf) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match name.as_str() {
            "plugin" => {
                let file_name = file_name.filter(|n| !n.is_empty()).ok_or_else(|| {
                    bad_upload(
                        "the `plugin` field has no file name (`<name>.wasm` or `<name>.zip`)",
                    )
                })?;
                plugin = Some((file_name, bytes.to_vec()));
            }
            "signature" => signature = Some(bytes.to_vec()).filter(|s| !s.is_empty()),
            "csrf" if form => csrf = Some(String::from_utf8_lossy(&bytes).into_owned()),
            other => {
                return Err(bad_upload(format!(
                    "unexpected field `{other}`: send `plugin` (the file) and optionally `signature`"
                )));
            }
        }
    }
    let (file_name, content) = plugin.ok_or_else(|| {
        bad_upload("no `plugin` field: send the file as multipart field `plugin`")
    })?;
    Ok(Upload {
        file_name,
        content,
        signature,
        csrf,
    })
}
