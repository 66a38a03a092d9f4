//! Rows as JSON objects, the same value for the same data on SQLite, PostgreSQL and MariaDB:
//! integers stay integers, floats and decimals are numbers (a decimal without a fraction is an
//! integer), text is a string, bytes are a UTF-8 string when valid and base64 otherwise,
//! dates and times are RFC 3339 (`2026-11-26`, `14:00:00`, `2026-11-26T14:00:00Z`; a timestamp
//! without zone is read as UTC), JSON columns are embedded, NULL is `null`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use gk_sdk::Row;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sea_orm::QueryResult;
use sea_orm::sqlx::{self, Column, Row as _, TypeInfo, ValueRef};
use serde_json::{Value, json};

/// Converts one result row.
pub(crate) fn to_json(row: &QueryResult) -> Result<Row, String> {
    if let Some(row) = row.try_as_sqlite_row() {
        return convert(row, sqlite_value);
    }
    if let Some(row) = row.try_as_pg_row() {
        return convert(row, pg_value);
    }
    if let Some(row) = row.try_as_mysql_row() {
        return convert(row, mysql_value);
    }
    Err("a row of an unknown database driver".to_owned())
}

fn convert<R: sqlx::Row>(
    row: &R,
    value: fn(&R, usize, &str) -> Result<Value, sqlx::Error>,
) -> Result<Row, String>
where
    usize: sqlx::ColumnIndex<R>,
{
    let mut out = Row::new();
    for (index, column) in row.columns().iter().enumerate() {
        let declared = column.type_info().name().to_ascii_uppercase();
        let cell = value(row, index, &declared)
            .map_err(|e| format!("column `{}` ({declared}): {e}", column.name()))?;
        out.insert(column.name().to_owned(), cell);
    }
    Ok(out)
}

/// Bytes as a UTF-8 string when valid, base64 otherwise.
pub(crate) fn bytes(data: Vec<u8>) -> Value {
    match String::from_utf8(data) {
        Ok(text) => Value::String(text),
        Err(e) => Value::String(STANDARD.encode(e.into_bytes())),
    }
}

fn decimal(d: Decimal) -> Value {
    if d.fract().is_zero()
        && let Some(i) = d.to_i64()
    {
        return json!(i);
    }
    d.to_f64().map_or(Value::Null, |f| json!(f))
}

fn timestamp_utc(t: NaiveDateTime) -> Value {
    json!(t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn timestamp(t: DateTime<Utc>) -> Value {
    json!(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn date(d: NaiveDate) -> Value {
    json!(d.format("%Y-%m-%d").to_string())
}

fn time(t: NaiveTime) -> Value {
    json!(t.format("%H:%M:%S%.f").to_string())
}

/// SQLite keeps dates as text: text in a column declared as a date or time is normalised.
pub(crate) fn sqlite_text(text: String, declared: &str) -> Value {
    let is_temporal = ["DATE", "TIME"].iter().any(|k| declared.contains(k));
    if is_temporal {
        for format in [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M:%S%.fZ",
        ] {
            if let Ok(t) = NaiveDateTime::parse_from_str(&text, format) {
                return timestamp_utc(t);
            }
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
            return timestamp(t.with_timezone(&Utc));
        }
    }
    Value::String(text)
}

fn sqlite_value(
    row: &sqlx::sqlite::SqliteRow,
    index: usize,
    declared: &str,
) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let storage = raw.type_info().name().to_ascii_uppercase();
    Ok(match storage.as_str() {
        "INTEGER" if declared == "BOOLEAN" => json!(row.try_get::<i64, _>(index)? != 0),
        "INTEGER" => json!(row.try_get::<i64, _>(index)?),
        "REAL" => json!(row.try_get::<f64, _>(index)?),
        "BLOB" => bytes(row.try_get::<Vec<u8>, _>(index)?),
        _ => sqlite_text(row.try_get::<String, _>(index)?, declared),
    })
}

fn pg_value(
    row: &sqlx::postgres::PgRow,
    index: usize,
    declared: &str,
) -> Result<Value, sqlx::Error> {
    if row.try_get_raw(index)?.is_null() {
        return Ok(Value::Null);
    }
    Ok(match declared {
        "BOOL" => json!(row.try_get::<bool, _>(index)?),
        "INT2" => json!(row.try_get::<i16, _>(index)?),
        "INT4" => json!(row.try_get::<i32, _>(index)?),
        "INT8" => json!(row.try_get::<i64, _>(index)?),
        "OID" => json!(row.try_get::<sqlx::postgres::types::Oid, _>(index)?.0),
        "FLOAT4" => json!(row.try_get::<f32, _>(index)?),
        "FLOAT8" => json!(row.try_get::<f64, _>(index)?),
        "NUMERIC" => decimal(row.try_get::<Decimal, _>(index)?),
        "BYTEA" => bytes(row.try_get::<Vec<u8>, _>(index)?),
        "TIMESTAMP" => timestamp_utc(row.try_get::<NaiveDateTime, _>(index)?),
        "TIMESTAMPTZ" => timestamp(row.try_get::<DateTime<Utc>, _>(index)?),
        "DATE" => date(row.try_get::<NaiveDate, _>(index)?),
        "TIME" => time(row.try_get::<NaiveTime, _>(index)?),
        "JSON" | "JSONB" => row.try_get::<Value, _>(index)?,
        _ => json!(row.try_get::<String, _>(index)?),
    })
}

fn mysql_value(
    row: &sqlx::mysql::MySqlRow,
    index: usize,
    declared: &str,
) -> Result<Value, sqlx::Error> {
    if row.try_get_raw(index)?.is_null() {
        return Ok(Value::Null);
    }
    Ok(match declared {
        "BOOLEAN" => json!(row.try_get::<bool, _>(index)?),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            json!(row.try_get::<i64, _>(index)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => {
            json!(row.try_get::<u64, _>(index)?)
        }
        "FLOAT" => json!(row.try_get::<f32, _>(index)?),
        "DOUBLE" => json!(row.try_get::<f64, _>(index)?),
        "DECIMAL" => decimal(row.try_get::<Decimal, _>(index)?),
        "DATETIME" => timestamp_utc(row.try_get::<NaiveDateTime, _>(index)?),
        "TIMESTAMP" => timestamp(row.try_get::<DateTime<Utc>, _>(index)?),
        "DATE" => date(row.try_get::<NaiveDate, _>(index)?),
        "TIME" => time(row.try_get::<NaiveTime, _>(index)?),
        "JSON" => row.try_get::<Value, _>(index)?,
        "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BINARY" | "VARBINARY" => {
            bytes(row.try_get::<Vec<u8>, _>(index)?)
        }
        _ => match row.try_get::<String, _>(index) {
            Ok(text) => json!(text),
            Err(_) => bytes(row.try_get::<Vec<u8>, _>(index)?),
        },
    })
}
