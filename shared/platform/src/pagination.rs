//! The one page-token codec: keyset pagination on (time, id), so page 1000
//! costs what page 1 costs. Tokens are opaque base64url and bound to the
//! filters of the request that produced them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::validate::Violations;

pub const DEFAULT_PAGE_SIZE: i64 = 25;
pub const MAX_PAGE_SIZE: i64 = 100;

/// Where the previous page ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub time: DateTime<Utc>,
    pub id: Uuid,
}

/// A validated page request.
#[derive(Clone, Debug)]
pub struct Page {
    /// Rows to return.
    pub size: i64,
    pub after: Option<Cursor>,
    filters: u64,
}

impl Page {
    /// Parses `page_size` and `page_token`; `filters` is any text that
    /// identifies the request's filters, so a token cannot be replayed with
    /// other filters.
    pub fn parse(page_size: i32, page_token: &str, filters: &str, v: &mut Violations) -> Page {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                v.add("page_size", "must not be negative");
                DEFAULT_PAGE_SIZE
            }
            n => i64::from(n).min(MAX_PAGE_SIZE),
        };
        let filters = fingerprint(filters);
        let after = if page_token.is_empty() {
            None
        } else {
            match decode(page_token) {
                Some((cursor, f)) if f == filters => Some(cursor),
                Some(_) => {
                    v.add("page_token", "was issued for other filters");
                    None
                }
                None => {
                    v.add("page_token", "is not a valid page token");
                    None
                }
            }
        };
        Page {
            size,
            after,
            filters,
        }
    }

    /// Rows to fetch: one more than a page, to know whether another follows.
    pub fn limit(&self) -> i64 {
        self.size + 1
    }

    pub fn after_time(&self) -> Option<DateTime<Utc>> {
        self.after.map(|c| c.time)
    }

    pub fn after_id(&self) -> Option<Uuid> {
        self.after.map(|c| c.id)
    }
}

/// Bytes of encoded items a page may carry: a default gRPC client refuses
/// messages over 4 MiB, so a page stops early (with a next-page token) well
/// before that, whatever the rows hold.
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

impl Page {
    /// Converts a fetched page to protos and returns them with the next-page
    /// token: at most `size` rows, and fewer when their encoded size would
    /// pass [`MAX_PAGE_BYTES`] (the token then resumes after the last row
    /// sent). The one list tail every List RPC ends with.
    pub fn finish<R, P: prost::Message>(
        &self,
        rows: Vec<R>,
        cursor: impl Fn(&R) -> Cursor,
        to_proto: impl Fn(R) -> P,
    ) -> (Vec<P>, String) {
        let more = rows.len() as i64 > self.size;
        let mut items = Vec::with_capacity(rows.len().min(self.size as usize));
        let mut bytes = 0;
        let mut last = None;
        for row in rows.into_iter().take(self.size as usize) {
            let row_cursor = cursor(&row);
            let item = to_proto(row);
            // Field tag and length prefix of a repeated message: a few bytes.
            bytes += item.encoded_len() + 8;
            if bytes > MAX_PAGE_BYTES && !items.is_empty() {
                return (
                    items,
                    last.map(|c| encode(c, self.filters)).unwrap_or_default(),
                );
            }
            items.push(item);
            last = Some(row_cursor);
        }
        let token = match (more, last) {
            (true, Some(c)) => encode(c, self.filters),
            _ => String::new(),
        };
        (items, token)
    }
}

fn fingerprint(filters: &str) -> u64 {
    // FNV-1a: stable across processes and versions, unlike DefaultHasher.
    filters.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(cursor: Cursor, filters: u64) -> String {
    let micros = cursor.time.timestamp_micros();
    URL_SAFE_NO_PAD.encode(format!("1:{micros}:{}:{filters:x}", cursor.id))
}

fn decode(token: &str) -> Option<(Cursor, u64)> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split(':');
    if parts.next()? != "1" {
        return None;
    }
    let time = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)
        .filter(crate::convert::in_range)?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    let filters = u64::from_str_radix(parts.next()?, 16).ok()?;
    parts
        .next()
        .is_none()
        .then_some((Cursor { time, id }, filters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bind_filters() {
        let mut v = Violations::new();
        let page = Page::parse(2, "", "active", &mut v);
        let now = Utc::now();
        let (rows, token) = page.finish(
            vec![1_u32, 2, 3],
            |_| Cursor {
                time: now,
                id: Uuid::nil(),
            },
            |n| n,
        );
        assert_eq!(rows, vec![1, 2]);
        let next = Page::parse(2, &token, "active", &mut v);
        assert!(v.finish().is_ok());
        assert_eq!(next.after_id(), Some(Uuid::nil()));
        assert_eq!(
            next.after_time().map(|t| t.timestamp_micros()),
            Some(now.timestamp_micros())
        );

        let mut v = Violations::new();
        Page::parse(2, &token, "inactive", &mut v);
        assert!(v.finish().is_err());
        let mut v = Violations::new();
        Page::parse(2, "garbage!", "active", &mut v);
        assert!(v.finish().is_err());
    }

    #[test]
    fn tokens_with_times_out_of_range_are_invalid() {
        let forged = URL_SAFE_NO_PAD.encode(format!(
            "1:-8000000000000000000:{}:{:x}",
            Uuid::nil(),
            fingerprint("")
        ));
        let mut v = Violations::new();
        Page::parse(10, &forged, "", &mut v);
        assert!(v.finish().is_err());
    }

    #[test]
    fn pages_stop_before_the_byte_budget() {
        let mut v = Violations::new();
        let page = Page::parse(100, "", "", &mut v);
        // 100 rows of 100 KiB each: about 10 MiB in all.
        let rows: Vec<u32> = (0..100).collect();
        let (items, token) = page.finish(
            rows,
            |i| Cursor {
                time: Utc::now(),
                id: Uuid::from_u128(u128::from(*i) + 1),
            },
            |_| "x".repeat(100 * 1024),
        );
        assert!(items.len() < 100 && !items.is_empty());
        assert!(items.iter().map(|s| s.len() + 8).sum::<usize>() <= MAX_PAGE_BYTES);
        let next = Page::parse(100, &token, "", &mut v);
        assert_eq!(next.after_id(), Some(Uuid::from_u128(items.len() as u128)));
    }

    #[test]
    fn page_size_defaults_and_caps() {
        let mut v = Violations::new();
        assert_eq!(Page::parse(0, "", "", &mut v).size, DEFAULT_PAGE_SIZE);
        assert_eq!(Page::parse(1000, "", "", &mut v).size, MAX_PAGE_SIZE);
        Page::parse(-1, "", "", &mut v);
        assert!(v.finish().is_err());
    }
}
