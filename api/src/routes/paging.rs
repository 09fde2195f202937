//! What the list operations share: page sizes and cursors.

use crate::error::ApiError;

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// Returns the page size asked for, or the default; outside 1 to 500 it is a 422 naming `limit`.
pub fn page_size(limit_opt: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit_opt.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit: must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    Ok(limit)
}

/// Checks that a cursor is one this API hands out (a time-ordered UUID); otherwise a 422 naming
/// `cursor`.
pub fn check_cursor(cursor_opt: Option<&str>) -> Result<(), ApiError> {
    match cursor_opt {
        Some(cursor) if uuid::Uuid::parse_str(cursor).is_err() => Err(ApiError::invalid(
            "cursor: is not a cursor returned by this API",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the page size defaults, accepts the bounds and names `limit` outside them, and
    /// that only UUIDs pass as cursors.
    #[test]
    fn page_size_and_cursor_are_checked() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(Some(1)).unwrap(), 1);
        assert_eq!(page_size(Some(MAX_PAGE_SIZE)).unwrap(), MAX_PAGE_SIZE);
        for bad in [0, MAX_PAGE_SIZE + 1] {
            assert!(
                page_size(Some(bad))
                    .unwrap_err()
                    .message
                    .starts_with("limit:")
            );
        }
        assert!(check_cursor(None).is_ok());
        assert!(check_cursor(Some("0190f5c2-7a1e-7cc2-8d7e-3f0c1a2b3c4d")).is_ok());
        assert!(
            check_cursor(Some("page-2"))
                .unwrap_err()
                .message
                .starts_with("cursor:")
        );
    }
}
