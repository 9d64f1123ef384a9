//! Request validation that collects every field violation before failing,
//! so a client learns about all its mistakes in one round trip.
//!
//! Every text field refuses control characters and the bidirectional
//! formatting characters that make text display in another order than it
//! is stored; e-mail addresses are normalised (NFKC, lower case) and must
//! be ASCII, so no look-alike of an address can sit next to it.

use tonic_types::FieldViolation;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::error::ApiError;

/// Column widths of the audited schema.
pub const SHORT_TEXT: usize = 255;
pub const TITLE_TEXT: usize = 500;
/// Free text (`TEXT` columns) is still bounded, to keep rows sane.
pub const LONG_TEXT: usize = 20_000;
/// Largest JSON document (a `Struct` field such as team settings), in bytes
/// of its JSON text. With every other field capped too, a page of 100 rows
/// stays far below the 4 MiB a default gRPC client accepts.
pub const MAX_JSON_BYTES: usize = 16 * 1024;
/// One tag (`tags` of outcomes and hypotheses).
pub const TAG_TEXT: usize = 64;
/// Tags on one resource.
pub const MAX_TAGS: usize = 50;
/// Items of one list-typed field stored as JSON (metrics, external refs).
pub const MAX_LIST_ITEMS: usize = 100;

/// Collects field violations. Each check returns a usable value even when
/// the input is bad (nil UUID, empty string); `finish` then fails, so those
/// placeholders never reach the database.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }

    /// A required UUID.
    pub fn uuid(&mut self, field: &str, value: &str) -> Uuid {
        if value.is_empty() {
            self.add(field, "is required");
            return Uuid::nil();
        }
        self.optional_uuid(field, value).unwrap_or_default()
    }

    /// An optional UUID: empty means none.
    pub fn optional_uuid(&mut self, field: &str, value: &str) -> Option<Uuid> {
        if value.is_empty() {
            return None;
        }
        match Uuid::parse_str(value) {
            Ok(id) if !id.is_nil() => Some(id),
            _ => {
                self.add(field, "must be a UUID");
                None
            }
        }
    }

    /// Required text, trimmed, at most `max` characters.
    pub fn required(&mut self, field: &str, value: &str, max: usize) -> String {
        let value = value.trim();
        if value.is_empty() {
            self.add(field, "is required");
        } else {
            self.check_len(field, value, max);
        }
        value.to_owned()
    }

    /// Optional text, trimmed: empty means none.
    pub fn optional(&mut self, field: &str, value: &str, max: usize) -> Option<String> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        self.check_len(field, value, max);
        Some(value.to_owned())
    }

    fn check_len(&mut self, field: &str, value: &str, max: usize) {
        let chars = value.chars().count();
        if chars > max {
            self.add(
                field,
                format!("must be at most {max} characters, got {chars}"),
            );
        }
        if let Some((c, what)) = value
            .chars()
            .find_map(|c| forbidden(c).map(|what| (c, what)))
        {
            self.add(
                field,
                format!("must not contain {what} (found U+{:04X})", u32::from(c)),
            );
        }
    }

    /// A required e-mail address, normalised ([`normalize_email`]). It must
    /// be ASCII once normalised: full-width letters become their ASCII
    /// selves, while a Cyrillic `а` or any other non-ASCII look-alike is
    /// refused, so `аlice@acme.test` can never be registered beside
    /// `alice@acme.test`. Internationalised domains go in their `xn--` form.
    pub fn email(&mut self, field: &str, value: &str) -> String {
        let raw = self.required(field, value, SHORT_TEXT);
        if raw.is_empty() {
            return raw;
        }
        let email = normalize_email(&raw);
        if !email.is_ascii() {
            self.add(
                field,
                "must be an ASCII e-mail address (internationalised domains in their xn-- form)",
            );
        } else if email.len() > SHORT_TEXT {
            self.add(field, format!("must be at most {SHORT_TEXT} characters"));
        } else if !is_email(&email) {
            self.add(field, "must be an e-mail address");
        }
        email
    }

    /// A URL-safe slug: lowercase letters, digits and single dashes.
    pub fn slug(&mut self, field: &str, value: &str) -> String {
        let slug = self.required(field, value, SHORT_TEXT);
        let valid = !slug.is_empty()
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !slug.starts_with('-')
            && !slug.ends_with('-')
            && !slug.contains("--");
        if !slug.is_empty() && !valid {
            self.add(field, "must be lowercase letters, digits and single dashes");
        }
        slug
    }

    /// An optional http(s) URL.
    pub fn optional_url(&mut self, field: &str, value: &str) -> Option<String> {
        let url = self.optional(field, value, SHORT_TEXT)?;
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.contains(char::is_whitespace)
        {
            self.add(field, "must be an http(s) URL");
        }
        Some(url)
    }

    /// An optional `Struct` as JSON text, at most [`MAX_JSON_BYTES`] long
    /// and holding only what JSON can (finite numbers, set values).
    pub fn json_struct(
        &mut self,
        field: &str,
        value: Option<&prost_types::Struct>,
    ) -> Option<String> {
        match crate::convert::struct_to_json(value?) {
            Ok(json) => Some(self.json_text(field, &json)),
            Err(e) => {
                self.add(field, format!("is not valid JSON: {e}"));
                None
            }
        }
    }

    /// A JSON document as the text stored in its column, at most
    /// [`MAX_JSON_BYTES`] long.
    pub fn json_text(&mut self, field: &str, value: &serde_json::Value) -> String {
        let json = value.to_string();
        if json.len() > MAX_JSON_BYTES {
            self.add(
                field,
                format!(
                    "must be at most {MAX_JSON_BYTES} bytes as JSON, got {}",
                    json.len()
                ),
            );
        }
        json
    }

    /// A number JSON can hold (finite), optionally within `range`.
    pub fn number(
        &mut self,
        field: &str,
        value: f64,
        range: Option<std::ops::RangeInclusive<f64>>,
    ) -> f64 {
        if !value.is_finite() {
            self.add(field, "must be a finite number");
        } else if let Some(range) = range.filter(|r| !r.contains(&value)) {
            self.add(
                field,
                format!("must be between {} and {}", range.start(), range.end()),
            );
        }
        value
    }

    /// Tags: trimmed, blanks and duplicates dropped (first kept), each at
    /// most [`TAG_TEXT`] characters, at most [`MAX_TAGS`] of them.
    pub fn tags(&mut self, field: &str, values: &[String]) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        for (i, tag) in values.iter().enumerate() {
            if let Some(tag) = self.optional(&format!("{field}[{i}]"), tag, TAG_TEXT)
                && !tags.contains(&tag)
            {
                tags.push(tag);
            }
        }
        if tags.len() > MAX_TAGS {
            self.add(
                field,
                format!("at most {MAX_TAGS} tags, got {}", tags.len()),
            );
        }
        tags
    }

    /// An optional ISO date (`YYYY-MM-DD`, years 1 to 9999): empty means none.
    pub fn optional_date(&mut self, field: &str, value: &str) -> Option<chrono::NaiveDate> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        match chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
            Ok(date) if (1..=9999).contains(&chrono::Datelike::year(&date)) => Some(date),
            _ => {
                self.add(field, "must be a date as YYYY-MM-DD");
                None
            }
        }
    }

    /// An optional proto enum: 0 means none, an unknown number is refused.
    pub fn optional_enum<E>(&mut self, field: &str, value: i32) -> Option<E>
    where
        E: TryFrom<i32>,
    {
        if value == 0 {
            return None;
        }
        self.enum_value(field, value)
    }

    /// A set of proto enum values (a list filter): unknown numbers and 0
    /// are refused, duplicates dropped.
    pub fn enum_set<E>(&mut self, field: &str, values: &[i32]) -> Vec<E>
    where
        E: TryFrom<i32> + PartialEq,
    {
        let mut set = Vec::new();
        for (i, value) in values.iter().enumerate() {
            if let Some(e) = self.enum_value::<E>(&format!("{field}[{i}]"), *value)
                && !set.contains(&e)
            {
                set.push(e);
            }
        }
        set
    }

    /// A proto enum that must be set to a known, non-zero value.
    pub fn enum_value<E>(&mut self, field: &str, value: i32) -> Option<E>
    where
        E: TryFrom<i32>,
    {
        if value == 0 {
            self.add(field, "is required");
            return None;
        }
        match E::try_from(value) {
            Ok(v) => Some(v),
            Err(_) => {
                self.add(field, format!("unknown value {value}"));
                None
            }
        }
    }
}

/// What every text field refuses, if `c` is one of them: control characters
/// (Unicode category Cc: C0, DEL and C1, tab and newline included), and the
/// bidirectional formatting characters (embeddings, overrides, isolates and
/// marks) that can make a name or address display as something it is not.
fn forbidden(c: char) -> Option<&'static str> {
    if c.is_control() {
        Some("control characters")
    } else if matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    ) {
        Some("bidirectional formatting characters")
    } else {
        None
    }
}

/// An e-mail address as it is stored and looked up: trimmed, NFKC-normalised
/// (compatibility forms such as full-width letters become ASCII) and lower
/// case. Login normalises the same way, so every spelling that normalises
/// alike finds the same account.
pub fn normalize_email(value: &str) -> String {
    value.trim().nfkc().collect::<String>().to_lowercase()
}

/// An `ILIKE` pattern matching `text` anywhere, with the pattern
/// characters of `text` escaped.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !value.contains(char::is_whitespace)
}

/// The paths of a validated `update_mask` (AIP-134): what an Update may
/// change. A parent path covers its children (`settings` covers
/// `settings.timezone`); `*` stands for every allowed path.
#[derive(Clone, Debug, Default)]
pub struct UpdateMask {
    paths: Vec<String>,
}

impl UpdateMask {
    /// Whether `path` is to be updated, itself or through a parent path.
    pub fn contains(&self, path: &str) -> bool {
        self.paths.iter().any(|given| {
            given == path
                || path
                    .strip_prefix(given.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Whether `path` or anything under it is to be updated.
    pub fn touches(&self, path: &str) -> bool {
        self.contains(path)
            || self.paths.iter().any(|given| {
                given
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

impl Violations {
    /// A required `update_mask`, each path checked against `allowed`
    /// (which lists every updatable path, nested ones included).
    pub fn update_mask(
        &mut self,
        mask: Option<&prost_types::FieldMask>,
        allowed: &[&str],
    ) -> UpdateMask {
        let given = mask.map(|m| m.paths.clone()).unwrap_or_default();
        if given.is_empty() {
            self.add(
                "update_mask",
                format!("is required; allowed paths: {}, or *", allowed.join(", ")),
            );
        }
        if given.iter().any(|p| p == "*") {
            if given.len() > 1 {
                self.add("update_mask", "* must be the only path");
            }
            return UpdateMask {
                paths: allowed
                    .iter()
                    .filter(|p| !p.contains('.'))
                    .map(|p| (*p).to_owned())
                    .collect(),
            };
        }
        for path in &given {
            if !allowed.contains(&path.as_str()) {
                self.add(
                    "update_mask",
                    format!("unknown path {path:?}; allowed: {}", allowed.join(", ")),
                );
            }
        }
        UpdateMask { paths: given }
    }
}

/// Compares a client's etag with the row's; empty means "don't check".
pub fn check_etag(given: &str, current: &str) -> Result<(), ApiError> {
    if given.is_empty() || given == current {
        Ok(())
    } else {
        Err(ApiError::stale_etag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_violation() {
        let mut v = Violations::new();
        v.uuid("user.id", "not-a-uuid");
        v.required("user.first_name", "", SHORT_TEXT);
        v.email("user.email", "nobody");
        v.required("user.title", &"x".repeat(256), SHORT_TEXT);
        let Err(ApiError::InvalidArgument(violations)) = v.finish() else {
            panic!("expected violations");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["user.id", "user.first_name", "user.email", "user.title"]
        );
    }

    #[test]
    fn accepts_good_input() {
        let mut v = Violations::new();
        let id = v.uuid("id", "11111111-1111-1111-1111-111111111111");
        assert_eq!(v.email("email", " Alice@Acme.test "), "alice@acme.test");
        assert_eq!(v.slug("slug", "team-one"), "team-one");
        assert!(v.finish().is_ok());
        assert!(!id.is_nil());
    }

    #[test]
    fn update_masks_cover_children_and_star() {
        let allowed = ["name", "settings", "settings.timezone", "settings.custom"];
        let mut v = Violations::new();
        let mask = v.update_mask(
            Some(&prost_types::FieldMask {
                paths: vec!["settings".into()],
            }),
            &allowed,
        );
        assert!(mask.contains("settings.timezone") && !mask.contains("name"));
        let star = v.update_mask(
            Some(&prost_types::FieldMask {
                paths: vec!["*".into()],
            }),
            &allowed,
        );
        assert!(star.contains("name") && star.contains("settings.custom"));
        let nested = v.update_mask(
            Some(&prost_types::FieldMask {
                paths: vec!["settings.custom".into()],
            }),
            &allowed,
        );
        assert!(nested.touches("settings") && !nested.contains("settings"));
        assert!(nested.contains("settings.custom") && !nested.contains("settings.timezone"));
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        v.update_mask(
            Some(&prost_types::FieldMask {
                paths: vec!["nope".into()],
            }),
            &allowed,
        );
        assert!(v.finish().is_err());
    }

    #[test]
    fn tags_dates_and_numbers() {
        let mut v = Violations::new();
        let tags = v.tags("tags", &[" a ".into(), "".into(), "a".into(), "b".into()]);
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(
            v.optional_date("d", "2030-02-28"),
            chrono::NaiveDate::from_ymd_opt(2030, 2, 28)
        );
        assert_eq!(v.optional_date("d", ""), None);
        v.number("n", 0.5, Some(0.0..=1.0));
        assert!(v.finish().is_ok());

        let mut v = Violations::new();
        v.tags("tags", &["x".repeat(TAG_TEXT + 1)]);
        v.optional_date("d", "2030-02-30");
        v.number("n", f64::NAN, None);
        v.number("m", 2.0, Some(0.0..=1.0));
        let Err(ApiError::InvalidArgument(violations)) = v.finish() else {
            panic!("expected violations");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["tags[0]", "d", "n", "m"]);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn text_fields_refuse_control_and_bidi_characters() {
        for bad in [
            "Ali\u{0007}ce",
            "Ali\nce",
            "Ali\tce",
            "Ali\u{0085}ce",
            "Ali\u{202E}ecila",
            "Ali\u{2066}ce",
            "Ali\u{200F}ce",
            "Ali\u{061C}ce",
            "nul\0",
        ] {
            let mut v = Violations::new();
            v.required("user.first_name", bad, SHORT_TEXT);
            v.optional("user.title", bad, SHORT_TEXT);
            let Err(ApiError::InvalidArgument(violations)) = v.finish() else {
                panic!("{bad:?} should be refused");
            };
            assert_eq!(violations.len(), 2, "{bad:?}");
        }
        let mut v = Violations::new();
        v.required("user.first_name", "Zoë O'Brien-Łukasz 李", SHORT_TEXT);
        assert!(v.finish().is_ok(), "ordinary letters pass");
    }

    #[test]
    fn emails_are_normalised_and_must_be_ascii() {
        let mut v = Violations::new();
        assert_eq!(
            v.email("email", "\u{FF21}lice@\u{FF41}cme.test"),
            "alice@acme.test"
        );
        assert_eq!(v.email("email", "ALICE＠ACME.TEST"), "alice@acme.test");
        assert!(v.finish().is_ok());
        for lookalike in [
            "\u{0430}lice@acme.test",
            "alice@\u{0430}cme.test",
            "alicé@acme.test",
        ] {
            let mut v = Violations::new();
            v.email("email", lookalike);
            assert!(v.finish().is_err(), "{lookalike} should be refused");
        }
        assert_eq!(
            normalize_email(" \u{FF21}LICE@acme.test "),
            "alice@acme.test"
        );
    }

    #[test]
    fn rejects_bad_slugs() {
        for slug in ["Team", "a--b", "-a", "a b", "ä"] {
            let mut v = Violations::new();
            v.slug("slug", slug);
            assert!(v.finish().is_err(), "{slug} should be rejected");
        }
    }
}
