//! Listings: which jobs (filters), which page of them, and the page with its counts.

use crate::domain::{FieldError, Invalid, JobStatus, JobType};

/// Largest page size of a listing.
pub const MAX_PAGE_SIZE: u64 = 100;
/// Largest page number: keeps every offset within what a store can count to.
pub const MAX_PAGE: i64 = 1_000_000_000;
/// Page size when none is given.
pub const DEFAULT_PAGE_SIZE: u64 = 20;

/// Filters of a job listing; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub job_type: Option<JobType>,
    /// Names starting with this text (case-sensitive).
    pub name_prefix: Option<String>,
}

/// A page of a listing: 1-based page number and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// From 1.
    pub page: u64,
    /// 1 to [`MAX_PAGE_SIZE`].
    pub size: u64,
}

impl PageRequest {
    /// Checks a page request: page ≥ 1 and 1 ≤ size ≤ 100; absent values take the defaults.
    pub fn parse(page: Option<i64>, size: Option<i64>) -> Result<Self, Invalid> {
        let mut errors = Vec::new();
        let page = page.unwrap_or(1);
        let size = size.unwrap_or(DEFAULT_PAGE_SIZE as i64);
        if page < 1 {
            errors.push(FieldError::new("page", "must be at least 1"));
        } else if page > MAX_PAGE {
            errors.push(FieldError::new(
                "page",
                format!("must be at most {MAX_PAGE}"),
            ));
        }
        if !(1..=MAX_PAGE_SIZE as i64).contains(&size) {
            errors.push(FieldError::new(
                "size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Invalid::check(errors)?;
        Ok(Self {
            page: page.unsigned_abs(),
            size: size.unsigned_abs(),
        })
    }

    /// How many items come before the page.
    pub fn offset(&self) -> u64 {
        self.page.saturating_sub(1).saturating_mul(self.size)
    }
}

/// One page of a listing, with the counts a client pages by.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The page's items, in listing order.
    pub items: Vec<T>,
    /// Items in the whole listing.
    pub total_count: u64,
    /// Pages in the whole listing at this size.
    pub total_pages: u64,
    /// This page's number.
    pub page: u64,
    /// The page size asked for.
    pub size: u64,
    /// Whether pages follow this one.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// The page `request` of a listing of `total_count` items.
    pub fn new(items: Vec<T>, total_count: u64, request: PageRequest) -> Self {
        let total_pages = total_count.div_ceil(request.size.max(1));
        Self {
            items,
            total_count,
            total_pages,
            page: request.page,
            size: request.size,
            has_more: request.page < total_pages,
        }
    }

    /// The same page with each item converted, for a transport's view.
    pub fn map<U>(self, convert: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(convert).collect(),
            total_count: self.total_count,
            total_pages: self.total_pages,
            page: self.page,
            size: self.size,
            has_more: self.has_more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_are_bounded() {
        let table = [
            (Some(0), None, Some("page")),
            (Some(i64::MAX), Some(100), Some("page")),
            (Some(MAX_PAGE), Some(100), None),
            (None, Some(0), Some("size")),
            (None, Some(1000), Some("size")),
            (None, None, None),
        ];
        let mut wrong = Vec::new();
        for (page, size, field) in table {
            let got = PageRequest::parse(page, size)
                .err()
                .map(|e| e.0[0].field.clone());
            if got.as_deref() != field {
                wrong.push(format!("{page:?} {size:?}: {got:?} instead of {field:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert_eq!(
            PageRequest::parse(None, None).unwrap(),
            PageRequest { page: 1, size: 20 }
        );
    }

    #[test]
    fn pages_count_the_whole_listing() {
        let page = Page::new(vec![1, 2], 5, PageRequest { page: 2, size: 2 });
        assert_eq!((page.total_pages, page.has_more), (3, true));
        let last = Page::new(vec![5], 5, PageRequest { page: 3, size: 2 });
        assert!(!last.has_more);
        assert_eq!(last.map(|n| n * 10).items, vec![50]);
    }
}
