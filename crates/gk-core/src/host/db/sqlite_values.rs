//! Values across the SQLite boundary for plugin statements: arguments bound as sqlx bound
//! them, and result rows read as `rows::sqlite_to_json` read sqlx's rows (declared `BOOLEAN`
//! read as booleans, text of declared date and time columns normalised).

use std::ffi::{CStr, c_int};

use gk_sdk::{HostError, HostResult, Row};
use libsqlite3_sys as ffi;
use serde_json::{Value, json};

use crate::host::rows;

/// Binds each argument to its `?`, as sqlx bound them (booleans as 0 and 1).
pub(super) fn bind_all(stmt: *mut ffi::sqlite3_stmt, values: &[sea_orm::Value]) -> HostResult<()> {
    // SAFETY: a live statement.
    let expected = unsafe { ffi::sqlite3_bind_parameter_count(stmt) };
    if usize::try_from(expected).ok() != Some(values.len()) {
        return Err(HostError::InvalidInput(format!(
            "the statement has {expected} parameters but {} arguments were given",
            values.len()
        )));
    }
    for (i, value) in values.iter().enumerate() {
        let index = c_int::try_from(i + 1).unwrap_or(c_int::MAX);
        // SAFETY: a live statement and a parameter index within its count; text is copied by
        // SQLite (`SQLITE_TRANSIENT`) before the call returns.
        let code = unsafe {
            match value {
                sea_orm::Value::Bool(Some(b)) => {
                    ffi::sqlite3_bind_int64(stmt, index, i64::from(*b))
                }
                sea_orm::Value::BigInt(Some(n)) => ffi::sqlite3_bind_int64(stmt, index, *n),
                sea_orm::Value::Double(Some(f)) => ffi::sqlite3_bind_double(stmt, index, *f),
                sea_orm::Value::String(Some(text)) => ffi::sqlite3_bind_text64(
                    stmt,
                    index,
                    text.as_ptr().cast(),
                    text.len() as u64,
                    ffi::SQLITE_TRANSIENT(),
                    ffi::SQLITE_UTF8 as u8,
                ),
                sea_orm::Value::Bool(None)
                | sea_orm::Value::BigInt(None)
                | sea_orm::Value::Double(None)
                | sea_orm::Value::String(None) => ffi::sqlite3_bind_null(stmt, index),
                other => {
                    return Err(HostError::InvalidInput(format!(
                        "argument {} ({other:?}) cannot be bound",
                        i + 1
                    )));
                }
            }
        };
        if code != ffi::SQLITE_OK {
            return Err(HostError::InvalidInput(format!(
                "argument {} cannot be bound (SQLite code {code})",
                i + 1
            )));
        }
    }
    Ok(())
}

/// A result column: its name and its declared type as sqlx named it (only `BOOLEAN` and the
/// date and time types change how a value reads).
pub(super) struct Column {
    name: String,
    declared: &'static str,
}

impl Column {
    pub(super) fn all(stmt: *mut ffi::sqlite3_stmt) -> Vec<Self> {
        // SAFETY: a live statement; names and declared types are copied at once.
        let count = unsafe { ffi::sqlite3_column_count(stmt) };
        (0..count)
            .map(|i| {
                let text = |p: *const std::ffi::c_char| {
                    (!p.is_null())
                        .then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
                };
                // SAFETY: as above.
                let (name, declared) = unsafe {
                    (
                        text(ffi::sqlite3_column_name(stmt, i)),
                        text(ffi::sqlite3_column_decltype(stmt, i)),
                    )
                };
                Self {
                    name: name.unwrap_or_default(),
                    declared: declared_name(declared.as_deref()),
                }
            })
            .collect()
    }
}

/// sqlx's name for a declared column type, where it matters.
fn declared_name(declared: Option<&str>) -> &'static str {
    match declared.map(str::to_ascii_lowercase).as_deref() {
        Some("boolean" | "bool") => "BOOLEAN",
        Some("date") => "DATE",
        Some("time") => "TIME",
        Some("datetime" | "timestamp") => "DATETIME",
        _ => "",
    }
}

/// The current row as JSON, value by value as `rows::sqlite_to_json` read sqlx's rows.
pub(super) fn read_row(stmt: *mut ffi::sqlite3_stmt, columns: &[Column]) -> Result<Row, String> {
    let mut row = Row::new();
    for (i, column) in columns.iter().enumerate() {
        let index = c_int::try_from(i).unwrap_or(c_int::MAX);
        // SAFETY: a statement positioned on a row; `index` is below its column count; the
        // bytes are copied before the next call on the statement.
        let value = unsafe {
            match ffi::sqlite3_column_type(stmt, index) {
                ffi::SQLITE_NULL => Value::Null,
                ffi::SQLITE_INTEGER => {
                    let n = ffi::sqlite3_column_int64(stmt, index);
                    if column.declared == "BOOLEAN" {
                        json!(n != 0)
                    } else {
                        json!(n)
                    }
                }
                ffi::SQLITE_FLOAT => json!(ffi::sqlite3_column_double(stmt, index)),
                ffi::SQLITE_BLOB => {
                    let data = ffi::sqlite3_column_blob(stmt, index);
                    rows::bytes(column_bytes(stmt, index, data.cast()))
                }
                _ => {
                    let data = ffi::sqlite3_column_text(stmt, index);
                    let text = String::from_utf8(column_bytes(stmt, index, data))
                        .map_err(|e| format!("column `{}`: {e}", column.name))?;
                    rows::sqlite_text(text, column.declared)
                }
            }
        };
        row.insert(column.name.clone(), value);
    }
    Ok(row)
}

/// Copies a column's bytes.
///
/// # Safety
/// `data` is what `sqlite3_column_blob`/`_text` just returned for this column of `stmt`.
unsafe fn column_bytes(stmt: *mut ffi::sqlite3_stmt, index: c_int, data: *const u8) -> Vec<u8> {
    // SAFETY: guaranteed by the caller.
    let length = unsafe { ffi::sqlite3_column_bytes(stmt, index) };
    match usize::try_from(length) {
        Ok(length) if length > 0 && !data.is_null() => {
            // SAFETY: SQLite's buffer holds `length` bytes until the next call on `stmt`.
            unsafe { std::slice::from_raw_parts(data, length) }.to_vec()
        }
        _ => Vec::new(),
    }
}
