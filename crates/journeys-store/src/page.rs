//! Keyset paging shared by the list operations.
//!
//! Rows are ordered by their primary key; the page token is the last key of the previous page,
//! so a page is a cheap index range scan and concurrent inserts never shift or repeat rows.

/// Page size used when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger requests are clamped to this.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, in key order.
    pub items: Vec<T>,
    /// Token for the next page; `None` on the last page. Opaque to callers.
    pub next_token: Option<String>,
}

/// The number of rows to return for a requested `page_size`.
pub(crate) fn effective_size(page_size: u32) -> u64 {
    u64::from(match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    })
}

/// Treats an empty token as "first page", as proto3 strings arrive empty when unset.
pub(crate) fn token(page_token: Option<&str>) -> Option<&str> {
    page_token.filter(|t| !t.is_empty())
}

/// Builds a page from `rows` fetched with `LIMIT size + 1`: the extra row only signals that
/// another page exists.
pub(crate) fn finish<T>(mut rows: Vec<T>, size: u64, key: impl Fn(&T) -> String) -> Page<T> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let next_token = if rows.len() > size {
        rows.truncate(size);
        rows.last().map(key)
    } else {
        None
    };
    Page {
        items: rows,
        next_token,
    }
}

#[cfg(test)]
mod tests {
    use super::{effective_size, finish};

    #[test]
    fn page_size_defaults_and_clamps() {
        assert_eq!(effective_size(0), 50);
        assert_eq!(effective_size(7), 7);
        assert_eq!(effective_size(1_000_000), 1000);
    }

    #[test]
    fn extra_row_yields_token_of_last_kept_row() {
        let page = finish(vec![1, 2, 3], 2, ToString::to_string);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_token.as_deref(), Some("2"));
        let last = finish(vec![1, 2], 2, ToString::to_string);
        assert_eq!(last.next_token, None);
    }
}
