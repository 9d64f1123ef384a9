//! The one page-token codec: keyset pagination, so page 1000 costs what
//! page 1 costs. A position is the sort key of the last row sent (by
//! default its time; any [`Ordering`] of times, dates and integers) and
//! its id as the tie-breaker. Tokens are opaque base64url, record the
//! ordering that issued them and are bound to the request's filters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::validate::Violations;

pub const DEFAULT_PAGE_SIZE: i64 = 25;
pub const MAX_PAGE_SIZE: i64 = 100;

/// Where the previous page ended, for lists ordered by (time, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub time: DateTime<Utc>,
    pub id: Uuid,
}

/// One value of a sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortValue {
    Time(DateTime<Utc>),
    /// A date; `None` is "no date" (which an ordering may sort last).
    Date(Option<NaiveDate>),
    Int(i64),
}

/// The kind of one sort key of an [`Ordering`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKind {
    Time,
    Date,
    Int,
}

impl SortValue {
    fn kind(&self) -> SortKind {
        match self {
            SortValue::Time(_) => SortKind::Time,
            SortValue::Date(_) => SortKind::Date,
            SortValue::Int(_) => SortKind::Int,
        }
    }
}

/// Where the previous page ended under any ordering: the sort key values
/// of its last row, then that row's id (the tie-breaker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub keys: Vec<SortValue>,
    pub id: Uuid,
}

impl From<Cursor> for Position {
    fn from(cursor: Cursor) -> Position {
        Position {
            keys: vec![SortValue::Time(cursor.time)],
            id: cursor.id,
        }
    }
}

/// The order of a list as its page tokens record it: a name, unique among
/// the orderings of one list, and the kinds of its sort keys (before the
/// id). A token resumes only the ordering that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ordering {
    pub name: &'static str,
    pub keys: &'static [SortKind],
}

impl Ordering {
    /// By one timestamp, then id: what [`Page::parse`] uses.
    pub const BY_TIME: Ordering = Ordering {
        name: "time",
        keys: &[SortKind::Time],
    };
}

/// A validated page request.
#[derive(Clone, Debug)]
pub struct Page {
    /// Rows to return.
    pub size: i64,
    pub after: Option<Position>,
    ordering: Ordering,
    filters: u64,
}

impl Page {
    /// Parses `page_size` and `page_token` of a list ordered by (time, id);
    /// `filters` is any text that identifies the request's filters, so a
    /// token cannot be replayed with other filters.
    pub fn parse(page_size: i32, page_token: &str, filters: &str, v: &mut Violations) -> Page {
        Page::parse_ordered(page_size, page_token, Ordering::BY_TIME, filters, v)
    }

    /// [`Page::parse`] for a list in `ordering`: a token issued for another
    /// ordering (or other filters) is refused.
    pub fn parse_ordered(
        page_size: i32,
        page_token: &str,
        ordering: Ordering,
        filters: &str,
        v: &mut Violations,
    ) -> Page {
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
                Some((name, _, _)) if name != ordering.name => {
                    v.add("page_token", "was issued for another order");
                    None
                }
                Some((_, position, _))
                    if position
                        .keys
                        .iter()
                        .map(SortValue::kind)
                        .ne(ordering.keys.iter().copied()) =>
                {
                    v.add("page_token", "is not a valid page token");
                    None
                }
                Some((_, position, f)) if f == filters => Some(position),
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
            ordering,
            filters,
        }
    }

    /// Rows to fetch: one more than a page, to know whether another follows.
    pub fn limit(&self) -> i64 {
        self.size + 1
    }

    /// The first sort key of the position, when it is a time (lists by
    /// (time, id)).
    pub fn after_time(&self) -> Option<DateTime<Utc>> {
        self.time_key(0)
    }

    pub fn after_id(&self) -> Option<Uuid> {
        self.after.as_ref().map(|p| p.id)
    }

    fn key(&self, index: usize) -> Option<SortValue> {
        self.after.as_ref()?.keys.get(index).copied()
    }

    /// Sort key `index` of the position, when it is a time.
    pub fn time_key(&self, index: usize) -> Option<DateTime<Utc>> {
        match self.key(index)? {
            SortValue::Time(time) => Some(time),
            _ => None,
        }
    }

    /// Sort key `index` of the position, when it is a date (`Some(None)`:
    /// the row had no date).
    pub fn date_key(&self, index: usize) -> Option<Option<NaiveDate>> {
        match self.key(index)? {
            SortValue::Date(date) => Some(date),
            _ => None,
        }
    }

    /// Sort key `index` of the position, when it is an integer.
    pub fn int_key(&self, index: usize) -> Option<i64> {
        match self.key(index)? {
            SortValue::Int(n) => Some(n),
            _ => None,
        }
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
    pub fn finish<R, P: prost::Message, C: Into<Position>>(
        &self,
        rows: Vec<R>,
        cursor: impl Fn(&R) -> C,
        to_proto: impl Fn(R) -> P,
    ) -> (Vec<P>, String) {
        let more = rows.len() as i64 > self.size;
        let mut items = Vec::with_capacity(rows.len().min(self.size as usize));
        let mut bytes = 0;
        let mut last = None;
        for row in rows.into_iter().take(self.size as usize) {
            let row_cursor: Position = cursor(&row).into();
            let item = to_proto(row);
            // Field tag and length prefix of a repeated message: a few bytes.
            bytes += item.encoded_len() + 8;
            if bytes > MAX_PAGE_BYTES && !items.is_empty() {
                return (items, last.map(|c| self.encode(&c)).unwrap_or_default());
            }
            items.push(item);
            last = Some(row_cursor);
        }
        let token = match (more, last) {
            (true, Some(c)) => self.encode(&c),
            _ => String::new(),
        };
        (items, token)
    }

    fn encode(&self, position: &Position) -> String {
        encode(self.ordering.name, position, self.filters)
    }
}

fn fingerprint(filters: &str) -> u64 {
    // FNV-1a: stable across processes and versions, unlike DefaultHasher.
    filters.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `2|<ordering>|<keys>|<id>|<filters>`, keys comma-separated and typed
/// (`t<unix micros>`, `d<YYYY-MM-DD>` or `d-` for no date, `i<n>`).
fn encode(ordering: &str, position: &Position, filters: u64) -> String {
    let keys: Vec<String> = position
        .keys
        .iter()
        .map(|key| match key {
            SortValue::Time(time) => format!("t{}", time.timestamp_micros()),
            SortValue::Date(Some(date)) => format!("d{date}"),
            SortValue::Date(None) => "d-".to_owned(),
            SortValue::Int(n) => format!("i{n}"),
        })
        .collect();
    URL_SAFE_NO_PAD.encode(format!(
        "2|{ordering}|{}|{}|{filters:x}",
        keys.join(","),
        position.id
    ))
}

fn decode_key(text: &str) -> Option<SortValue> {
    let (kind, value) = text.split_at_checked(1)?;
    match kind {
        "t" => DateTime::from_timestamp_micros(value.parse().ok()?)
            .filter(crate::convert::in_range)
            .map(SortValue::Time),
        "d" if value == "-" => Some(SortValue::Date(None)),
        "d" => NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .ok()
            .filter(|d| crate::convert::in_range(&d.and_time(chrono::NaiveTime::MIN).and_utc()))
            .map(|d| SortValue::Date(Some(d))),
        "i" => value.parse().ok().map(SortValue::Int),
        _ => None,
    }
}

/// The ordering's name, the position and the filters' fingerprint of a
/// token. Tokens of the first format (`1:<micros>:<id>:<filters>`) still
/// resume lists ordered by (time, id).
fn decode(token: &str) -> Option<(String, Position, u64)> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    if let Some(rest) = text.strip_prefix("1:") {
        let mut parts = rest.split(':');
        let time = decode_key(&format!("t{}", parts.next()?))?;
        let id = Uuid::parse_str(parts.next()?).ok()?;
        let filters = u64::from_str_radix(parts.next()?, 16).ok()?;
        let position = Position {
            keys: vec![time],
            id,
        };
        return parts
            .next()
            .is_none()
            .then(|| (Ordering::BY_TIME.name.to_owned(), position, filters));
    }
    let mut parts = text.split('|');
    if parts.next()? != "2" {
        return None;
    }
    let ordering = parts.next()?.to_owned();
    let keys = parts
        .next()?
        .split(',')
        .map(decode_key)
        .collect::<Option<Vec<_>>>()?;
    let id = Uuid::parse_str(parts.next()?).ok()?;
    let filters = u64::from_str_radix(parts.next()?, 16).ok()?;
    parts
        .next()
        .is_none()
        .then_some((ordering, Position { keys, id }, filters))
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

    const BY_DATE: Ordering = Ordering {
        name: "date",
        keys: &[SortKind::Date, SortKind::Int, SortKind::Time],
    };

    #[test]
    fn ordered_tokens_round_trip_and_bind_their_ordering() {
        let mut v = Violations::new();
        let page = Page::parse_ordered(1, "", BY_DATE, "f", &mut v);
        let now = Utc::now();
        let position = |date| Position {
            keys: vec![
                SortValue::Date(date),
                SortValue::Int(-3),
                SortValue::Time(now),
            ],
            id: Uuid::nil(),
        };
        for date in [None, NaiveDate::from_ymd_opt(2030, 1, 31)] {
            let (_, token) = page.finish(vec![1_u32, 2], |_| position(date), |n| n);
            let next = Page::parse_ordered(1, &token, BY_DATE, "f", &mut v);
            assert_eq!(next.date_key(0), Some(date));
            assert_eq!(next.int_key(1), Some(-3));
            assert_eq!(
                next.time_key(2).map(|t| t.timestamp_micros()),
                Some(now.timestamp_micros())
            );
            assert_eq!(next.after_id(), Some(Uuid::nil()));
            assert!(v.is_empty());

            let mut other = Violations::new();
            Page::parse(1, &token, "f", &mut other);
            assert!(other.finish().is_err(), "a token of another ordering");
            let mut other = Violations::new();
            Page::parse_ordered(1, &token, BY_DATE, "g", &mut other);
            assert!(other.finish().is_err(), "a token of other filters");
        }
    }

    #[test]
    fn first_format_tokens_still_resume_time_lists() {
        let now = Utc::now();
        let token = URL_SAFE_NO_PAD.encode(format!(
            "1:{}:{}:{:x}",
            now.timestamp_micros(),
            Uuid::nil(),
            fingerprint("x")
        ));
        let mut v = Violations::new();
        let page = Page::parse(5, &token, "x", &mut v);
        assert!(v.finish().is_ok());
        assert_eq!(
            page.after_time().map(|t| t.timestamp_micros()),
            Some(now.timestamp_micros())
        );
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
