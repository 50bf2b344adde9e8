//! Listings: which jobs (filters), which page of them, and the page with its counts; and the
//! byte bounds of what a store reads in one go: a page ([`MAX_PAGE_BYTES`]) and a batch of
//! claimed jobs ([`MAX_CLAIM_BYTES`]).

use crate::domain::{Event, FieldError, Invalid, Job, JobStatus, JobType, Run};

/// Largest page size of a listing.
pub const MAX_PAGE_SIZE: u64 = 100;
/// Largest page number: keeps every offset within what a store can count to.
pub const MAX_PAGE: i64 = 1_000_000_000;
/// Page size when none is given.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Most bytes the items of one page may take (about what they take on either wire): below the
/// 4 MiB a gRPC client accepts by default, and what ten concurrent pages of the largest jobs
/// hold in memory stays small. A page whose items would take more holds only those that fit,
/// and says so (`truncated`).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// Most bytes of jobs one claim takes, whatever the batch size: a batch of the largest jobs
/// due together is a few dozen, not hundreds held at once with their steps and events. The
/// stores count a job's stored document (the embedded store) or its decoded weight (MongoDB).
pub const MAX_CLAIM_BYTES: usize = 4 * 1024 * 1024;

/// About how many bytes an item takes, in a response or held in memory (a page, a claim, an
/// event waiting for a stream client): its texts plus a fixed allowance for the rest.
pub trait Weight {
    /// The bytes.
    fn weight(&self) -> usize;
}

/// The length of an optional text.
fn text(s: &Option<String>) -> usize {
    s.as_deref().map_or(0, str::len)
}

impl Weight for Job {
    fn weight(&self) -> usize {
        512 + self.name.len()
            + self.description.len()
            + self.job_data.size()
            + self.open_runs.iter().map(Weight::weight).sum::<usize>()
            + text(&self.created_by)
            + text(&self.updated_by)
    }
}

impl Weight for Run {
    fn weight(&self) -> usize {
        256 + text(&self.error) + text(&self.output) + text(&self.actor) + text(&self.reason)
    }
}

impl Weight for Event {
    fn weight(&self) -> usize {
        256 + self.job.weight()
            + self.run.as_ref().map_or(0, Weight::weight)
            + text(&self.actor)
            + text(&self.reason)
    }
}

/// What a store has read of a page or a claim, so it stops reading once the items exceed a
/// bound. The item that crosses the bound is kept, so [`Page::new`] sees that a page was cut
/// and says so.
#[derive(Debug)]
pub struct ByteBudget {
    bytes: usize,
    max: usize,
}

impl ByteBudget {
    /// The budget of a page: [`MAX_PAGE_BYTES`].
    pub fn page() -> Self {
        Self {
            bytes: 0,
            max: MAX_PAGE_BYTES,
        }
    }

    /// The budget of a claim: [`MAX_CLAIM_BYTES`].
    pub fn claim() -> Self {
        Self {
            bytes: 0,
            max: MAX_CLAIM_BYTES,
        }
    }

    /// Adds `item` to `items`; whether the store should read on.
    pub fn push<T: Weight>(&mut self, items: &mut Vec<T>, item: T) -> bool {
        self.bytes = self.bytes.saturating_add(item.weight());
        items.push(item);
        self.bytes <= self.max
    }
}

/// Filters of a job listing; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub job_type: Option<JobType>,
    /// Names starting with this text (case-sensitive).
    pub name_prefix: Option<String>,
    /// Only jobs the scheduler must look at by then (`Job::due_at`: the next fire, or an open
    /// run's deadline); a paused or cancelled job with no open run never is.
    pub due_before: Option<chrono::DateTime<chrono::Utc>>,
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
    /// Whether the page holds only its first items, because all would take more than
    /// [`MAX_PAGE_BYTES`]: the rest are seen by asking for a smaller page size.
    pub truncated: bool,
}

impl<T> Page<T> {
    /// The page `request` of a listing of `total_count` items.
    /// The items are kept up to [`MAX_PAGE_BYTES`] (at least one).
    pub fn new(mut items: Vec<T>, total_count: u64, request: PageRequest) -> Self
    where
        T: Weight,
    {
        let total_pages = total_count.div_ceil(request.size.max(1));
        let mut bytes = 0usize;
        let fit = items
            .iter()
            .position(|item| {
                bytes = bytes.saturating_add(item.weight());
                bytes > MAX_PAGE_BYTES
            })
            .map_or(items.len(), |first_over| first_over.max(1));
        let truncated = fit < items.len();
        items.truncate(fit);
        Self {
            items,
            total_count,
            total_pages,
            page: request.page,
            size: request.size,
            has_more: request.page < total_pages,
            truncated,
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
            truncated: self.truncated,
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

    impl Weight for usize {
        fn weight(&self) -> usize {
            *self
        }
    }

    #[test]
    fn pages_count_the_whole_listing() {
        let page = Page::new(vec![1, 2], 5, PageRequest { page: 2, size: 2 });
        assert_eq!((page.total_pages, page.has_more), (3, true));
        let last = Page::new(vec![5], 5, PageRequest { page: 3, size: 2 });
        assert!(!last.has_more && !last.truncated);
        assert_eq!(last.map(|n| n * 10).items, vec![50]);
    }

    #[test]
    fn a_page_keeps_the_items_that_fit_its_bytes_and_says_so() {
        let request = PageRequest { page: 1, size: 4 };
        let half = MAX_PAGE_BYTES / 2;
        let page = Page::new(vec![half, half, 1, 1], 9, request);
        assert_eq!((page.items.len(), page.truncated), (2, true));
        let whole = Page::new(vec![half, half - 1, 1], 9, request);
        assert_eq!((whole.items.len(), whole.truncated), (3, false));
        let huge = Page::new(vec![MAX_PAGE_BYTES * 2, 1], 9, request);
        assert_eq!(
            (huge.items.len(), huge.truncated),
            (1, true),
            "one item always"
        );
    }
}
