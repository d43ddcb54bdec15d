//! What every part's SQL shares: reading a row's columns back into values (ids and JSON are
//! stored as text; one that does not parse is [`StorageError::Corrupt`]), telling a unique
//! violation, and the placeholders of a multi-row statement.

use std::fmt::Write as _;

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Backend, Result, StorageError};

/// Reads a nullable text column and parses it; a value that does not parse is `Corrupt`.
pub(crate) fn parse_opt<T, E: std::fmt::Display>(
    row: &AnyRow,
    column: &'static str,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        parse(&t).map_err(|e| StorageError::Corrupt {
            column,
            detail: e.to_string(),
        })
    })
    .transpose()
}

/// Like [`parse_opt`] for a column that must not be NULL.
pub(crate) fn parse_req<T, E: std::fmt::Display>(
    row: &AnyRow,
    column: &'static str,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> Result<T> {
    parse_opt(row, column, parse)?.ok_or_else(|| StorageError::Corrupt {
        column,
        detail: "NULL".into(),
    })
}

pub(crate) fn uuid_of(row: &AnyRow, column: &'static str) -> Result<Uuid> {
    parse_req(row, column, Uuid::parse_str)
}

pub(crate) fn opt_uuid_of(row: &AnyRow, column: &'static str) -> Result<Option<Uuid>> {
    parse_opt(row, column, Uuid::parse_str)
}

/// The owning organisation; rows from before organisations existed read as the nil id until
/// [`Storage::bootstrap_operator_key`](crate::Storage::bootstrap_operator_key) gives them one.
pub(crate) fn org_of(row: &AnyRow) -> Result<Uuid> {
    Ok(opt_uuid_of(row, "org_id")?.unwrap_or(Uuid::nil()))
}

pub(crate) fn json_of(row: &AnyRow, column: &'static str) -> Result<Value> {
    parse_req(row, column, |t| serde_json::from_str::<Value>(t))
}

pub(crate) fn opt_json_of(row: &AnyRow, column: &'static str) -> Result<Option<Value>> {
    parse_opt(row, column, |t| serde_json::from_str::<Value>(t))
}

pub(crate) fn opt_u32(row: &AnyRow, column: &'static str) -> Result<Option<u32>> {
    let v: Option<i64> = row.try_get(column)?;
    Ok(v.and_then(|v| u32::try_from(v).ok()))
}

pub(crate) fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The placeholders of `rows` rows of `columns` values each, bound in order: `(?, ?, …), (?, …)`
/// on SQLite, `($1, $2, …), ($n+1, …)` on PostgreSQL.
///
/// SQLite takes a `$1` for a *named* parameter and looks every name up in a list as it parses
/// (and again for each binding), so a statement with thousands of them — a group of the
/// writer's — costs time quadratic in their number; a nameless `?` costs nothing to look up.
pub(crate) fn values(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    // Writing to a String cannot fail.
                    let _ = write!(sql, "${}", row * columns + column + 1);
                }
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_nameless_on_sqlite_and_numbered_on_postgres() {
        assert_eq!(values(Backend::Sqlite, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(
            values(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values(Backend::Sqlite, 1, 1), "(?)");
    }
}
