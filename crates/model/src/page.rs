//! List answers: `{"data": [...], "next_cursor": ...}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last (and for lists on one page).
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Every item on one page.
    pub fn all(data: Vec<T>) -> Self {
        Self {
            data,
            next_cursor: None,
        }
    }
}
