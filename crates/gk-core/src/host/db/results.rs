//! What a statement returns, collected under the row and byte caps: reading stops at the first
//! row past either cap, before more of the result is built in memory.

use gk_sdk::{HostError, HostResult, Row};
use serde_json::Value;

use super::Limits;

/// The outcome of one statement.
#[derive(Debug)]
pub(super) enum Collected {
    /// A query's rows so far and their size.
    Rows { rows: Vec<Row>, bytes: usize },
    /// A statement's affected rows.
    Affected(u64),
}

impl Collected {
    pub(super) fn rows() -> Self {
        Self::Rows {
            rows: Vec::new(),
            bytes: 0,
        }
    }

    pub(super) fn affected() -> Self {
        Self::Affected(0)
    }

    pub(super) fn wants_rows(&self) -> bool {
        matches!(self, Self::Rows { .. })
    }

    /// Adds a row, or refuses it past `max_rows` or `max_result_bytes`.
    pub(super) fn push(&mut self, row: Row, limits: &Limits) -> HostResult<()> {
        let Self::Rows { rows, bytes } = self else {
            return Ok(());
        };
        if rows.len() == limits.max_rows {
            return Err(HostError::InvalidInput(format!(
                "the query returned more than {} rows (max_rows): add a LIMIT",
                limits.max_rows
            )));
        }
        *bytes += row_size(&row);
        if *bytes > limits.max_result_bytes {
            return Err(HostError::InvalidInput(format!(
                "the query returned more than {} bytes (max_result_bytes): select fewer columns or rows",
                limits.max_result_bytes
            )));
        }
        rows.push(row);
        Ok(())
    }

    pub(super) fn set_affected(&mut self, affected: u64) {
        *self = Self::Affected(affected);
    }

    pub(super) fn into_rows(self) -> Vec<Row> {
        match self {
            Self::Rows { rows, .. } => rows,
            Self::Affected(_) => Vec::new(),
        }
    }

    pub(super) fn into_affected(self) -> u64 {
        match self {
            Self::Affected(n) => n,
            Self::Rows { rows, .. } => rows.len() as u64,
        }
    }
}

/// About the bytes a row takes as JSON.
pub(super) fn row_size(row: &Row) -> usize {
    row.iter()
        .map(|(column, value)| column.len() + value_size(value) + 4)
        .sum()
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(value_size).sum::<usize>() + 2,
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + value_size(v) + 4).sum(),
    }
}
