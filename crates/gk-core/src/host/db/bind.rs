//! JSON arguments bound as database values: with their own type (SQLite, MariaDB), or as the
//! type PostgreSQL infers for each parameter.

use gk_sdk::{HostError, HostResult};
use serde_json::Value;

/// Binds one JSON argument as the PostgreSQL type inferred for its parameter (the prepared
/// statement expects exactly that type): numbers, booleans and strings are converted to it, or
/// refused with an error naming the argument.
pub(crate) fn bind_postgres(
    index: usize,
    value: &Value,
    pg_type: &str,
) -> HostResult<sea_orm::Value> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    let wrong = |what: &str| {
        HostError::InvalidInput(format!("argument {} ({value}) is not {what}", index + 1))
    };
    if value.is_null() {
        return Ok(null_of(pg_type));
    }
    if matches!(value, Value::Array(_) | Value::Object(_)) {
        return bind(index, value);
    }
    let text = match value {
        Value::String(text) => Some(text.trim()),
        _ => None,
    };
    let integer = || -> HostResult<i64> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| wrong("an integer")),
            Value::Bool(b) => Ok(i64::from(*b)),
            _ => text
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| wrong("an integer")),
        }
    };
    let float = || -> HostResult<f64> {
        match value {
            Value::Number(n) => n.as_f64().ok_or_else(|| wrong("a number")),
            _ => text
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| wrong("a number")),
        }
    };
    let naive = |text: &str| {
        [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc).naive_utc())
        })
    };
    Ok(match pg_type {
        "INT2" => sea_orm::Value::SmallInt(Some(
            i16::try_from(integer()?).map_err(|_| wrong("a 16-bit integer"))?,
        )),
        "INT4" => sea_orm::Value::Int(Some(
            i32::try_from(integer()?).map_err(|_| wrong("a 32-bit integer"))?,
        )),
        "INT8" => sea_orm::Value::BigInt(Some(integer()?)),
        "FLOAT4" => sea_orm::Value::Float(Some(float()? as f32)),
        "FLOAT8" => sea_orm::Value::Double(Some(float()?)),
        "NUMERIC" => {
            let digits = match value {
                Value::Number(n) => n.to_string(),
                _ => text.ok_or_else(|| wrong("a number"))?.to_owned(),
            };
            sea_orm::Value::Decimal(Some(digits.parse().map_err(|_| wrong("a number"))?))
        }
        "BOOL" => sea_orm::Value::Bool(Some(match (value, text.map(str::to_ascii_lowercase)) {
            (Value::Bool(b), _) => *b,
            (_, Some(t)) if matches!(t.as_str(), "true" | "t" | "1" | "yes") => true,
            (_, Some(t)) if matches!(t.as_str(), "false" | "f" | "0" | "no") => false,
            (Value::Number(n), _) if n.as_i64().is_some() => n.as_i64() != Some(0),
            _ => return Err(wrong("a boolean")),
        })),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
            sea_orm::Value::String(Some(match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }))
        }
        "TIMESTAMP" => sea_orm::Value::ChronoDateTime(Some(
            text.and_then(naive).ok_or_else(|| wrong("a timestamp"))?,
        )),
        "TIMESTAMPTZ" => sea_orm::Value::ChronoDateTimeUtc(Some(
            text.and_then(naive)
                .map(|t| t.and_utc())
                .ok_or_else(|| wrong("a timestamp"))?,
        )),
        "DATE" => sea_orm::Value::ChronoDate(Some(
            text.and_then(|t| {
                NaiveDate::parse_from_str(t, "%Y-%m-%d")
                    .ok()
                    .or_else(|| naive(t).map(|n| n.date()))
            })
            .ok_or_else(|| wrong("a date"))?,
        )),
        "TIME" => sea_orm::Value::ChronoTime(Some(
            text.and_then(|t| NaiveTime::parse_from_str(t, "%H:%M:%S%.f").ok())
                .ok_or_else(|| wrong("a time"))?,
        )),
        "JSON" | "JSONB" => sea_orm::Value::Json(Some(Box::new(match text {
            Some(t) => serde_json::from_str(t).map_err(|_| wrong("JSON"))?,
            None => value.clone(),
        }))),
        _ => bind(index, value)?,
    })
}

/// A NULL of the PostgreSQL type inferred for a parameter (an untyped NULL bound as text would
/// not go into a column of another type).
fn null_of(pg_type: &str) -> sea_orm::Value {
    match pg_type {
        "INT2" => sea_orm::Value::SmallInt(None),
        "INT4" => sea_orm::Value::Int(None),
        "INT8" => sea_orm::Value::BigInt(None),
        "FLOAT4" => sea_orm::Value::Float(None),
        "FLOAT8" => sea_orm::Value::Double(None),
        "NUMERIC" => sea_orm::Value::Decimal(None),
        "BOOL" => sea_orm::Value::Bool(None),
        "TIMESTAMP" => sea_orm::Value::ChronoDateTime(None),
        "TIMESTAMPTZ" => sea_orm::Value::ChronoDateTimeUtc(None),
        "DATE" => sea_orm::Value::ChronoDate(None),
        "TIME" => sea_orm::Value::ChronoTime(None),
        "JSON" | "JSONB" => sea_orm::Value::Json(None),
        "BYTEA" => sea_orm::Value::Bytes(None),
        _ => sea_orm::Value::String(None),
    }
}

/// Binds one JSON argument with its own type.
pub(crate) fn bind(index: usize, value: &Value) -> HostResult<sea_orm::Value> {
    Ok(match value {
        Value::Null => sea_orm::Value::String(None),
        Value::Bool(b) => sea_orm::Value::Bool(Some(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => sea_orm::Value::BigInt(Some(i)),
            (None, Some(f)) => sea_orm::Value::Double(Some(f)),
            _ => {
                return Err(HostError::InvalidInput(format!(
                    "argument {} ({n}) is out of range",
                    index + 1
                )));
            }
        },
        Value::String(s) => sea_orm::Value::String(Some(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            return Err(HostError::InvalidInput(format!(
                "argument {} is an array or object: arguments are null, booleans, numbers or strings",
                index + 1
            )));
        }
    })
}
