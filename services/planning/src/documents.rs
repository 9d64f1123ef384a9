//! The typed JSON documents of planning's TEXT columns: metrics, external
//! references, tags and experiment configs and results are proto messages
//! in the API and JSON text in the audited columns.
//!
//! Writing validates into field violations and keeps the JSON shape the
//! first release wrote (`current` under "value", a reference's id under
//! "key", the experiment type in snake case), so every row of a column has
//! one shape. Reading never fails: rows the old application wrote, or JSON
//! that does not fit the message, read back as far as they fit (unknown
//! keys and values of the wrong type are left out).

use std::collections::HashMap;

use codeops_platform::Violations;
use codeops_platform::validate::{LONG_TEXT, MAX_LIST_ITEMS, SHORT_TEXT};
use codeops_proto::planning::{
    ExperimentConfig, ExperimentResults, ExperimentType, ExternalRef, Metric,
};
use serde_json::{Map, Value, json};

/// The JSON of a column, or `Value::Null` when it is empty or not JSON.
pub fn parse(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn str_of(object: &Map<String, Value>, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| object.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned()
}

fn num_of(object: &Map<String, Value>, keys: &[&str]) -> Option<f64> {
    keys.iter()
        .find_map(|k| object.get(*k).and_then(Value::as_f64))
}

fn objects(value: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

// ---------------------------------------------------------------------------
// Metrics

pub fn metrics_from_json(text: Option<&str>) -> Vec<Metric> {
    metrics_from_value(&parse(text))
}

fn metrics_from_value(value: &Value) -> Vec<Metric> {
    objects(value)
        .map(|m| Metric {
            key: str_of(m, &["key", "name"]),
            label: str_of(m, &["label"]),
            unit: str_of(m, &["unit"]),
            baseline: num_of(m, &["baseline"]),
            target: num_of(m, &["target"]),
            current: num_of(m, &["value", "current"]),
        })
        .collect()
}

fn metrics_value(field: &str, metrics: &[Metric], v: &mut Violations) -> Value {
    if metrics.len() > MAX_LIST_ITEMS {
        v.add(
            field,
            format!("at most {MAX_LIST_ITEMS} metrics, got {}", metrics.len()),
        );
    }
    let mut keys = Vec::new();
    let items = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |name: &str| format!("{field}[{i}].{name}");
            let key = v.required(&at("key"), &m.key, SHORT_TEXT);
            if !key.is_empty() && keys.contains(&key) {
                v.add(at("key"), "is used twice in this list");
            }
            keys.push(key.clone());
            let mut object = Map::new();
            object.insert("key".into(), key.into());
            if let Some(label) = v.optional(&at("label"), &m.label, SHORT_TEXT) {
                object.insert("label".into(), label.into());
            }
            if let Some(unit) = v.optional(&at("unit"), &m.unit, SHORT_TEXT) {
                object.insert("unit".into(), unit.into());
            }
            for (name, stored, value) in [
                ("baseline", "baseline", m.baseline),
                ("target", "target", m.target),
                ("current", "value", m.current),
            ] {
                if let Some(value) = value {
                    let value = v.number(&at(name), value, None);
                    if let Some(number) = serde_json::Number::from_f64(value) {
                        object.insert(stored.into(), number.into());
                    }
                }
            }
            Value::Object(object)
        })
        .collect();
    Value::Array(items)
}

/// Metrics as their column's JSON text; an empty list is NULL.
pub fn metrics_to_json(field: &str, metrics: &[Metric], v: &mut Violations) -> Option<String> {
    if metrics.is_empty() {
        return None;
    }
    let value = metrics_value(field, metrics, v);
    Some(v.json_text(field, &value))
}

// ---------------------------------------------------------------------------
// External references

pub fn refs_from_json(text: Option<&str>) -> Vec<ExternalRef> {
    objects(&parse(text))
        .map(|r| ExternalRef {
            system: str_of(r, &["system"]),
            id: str_of(r, &["key", "id"]),
            url: str_of(r, &["url"]),
        })
        .collect()
}

/// References as their column's JSON text; an empty list is NULL.
pub fn refs_to_json(field: &str, refs: &[ExternalRef], v: &mut Violations) -> Option<String> {
    if refs.is_empty() {
        return None;
    }
    if refs.len() > MAX_LIST_ITEMS {
        v.add(
            field,
            format!("at most {MAX_LIST_ITEMS} references, got {}", refs.len()),
        );
    }
    let items: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |name: &str| format!("{field}[{i}].{name}");
            let mut object = Map::new();
            object.insert(
                "system".into(),
                v.required(&at("system"), &r.system, SHORT_TEXT).into(),
            );
            object.insert(
                "key".into(),
                v.required(&at("id"), &r.id, SHORT_TEXT).into(),
            );
            if let Some(url) = v.optional_url(&at("url"), &r.url) {
                object.insert("url".into(), url.into());
            }
            Value::Object(object)
        })
        .collect();
    Some(v.json_text(field, &Value::Array(items)))
}

// ---------------------------------------------------------------------------
// Tags

pub fn tags_from_json(text: Option<&str>) -> Vec<String> {
    parse(text)
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

/// Tags as their column's JSON text; none is NULL.
pub fn tags_to_json(field: &str, tags: &[String], v: &mut Violations) -> Option<String> {
    let tags = v.tags(field, tags);
    if tags.is_empty() {
        return None;
    }
    Some(v.json_text(field, &json!(tags)))
}

// ---------------------------------------------------------------------------
// Experiments

const EXPERIMENT_TYPES: &[(ExperimentType, &str)] = &[
    (ExperimentType::AbTest, "ab_test"),
    (ExperimentType::Holdout, "holdout"),
    (ExperimentType::Pilot, "pilot"),
    (ExperimentType::Other, "other"),
];

pub fn config_from_json(text: Option<&str>) -> Option<ExperimentConfig> {
    let value = parse(text);
    let c = value.as_object()?;
    let kind = c.get("type").and_then(Value::as_str).unwrap_or_default();
    let split: HashMap<String, f64> = c
        .get("split")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    Some(ExperimentConfig {
        r#type: EXPERIMENT_TYPES
            .iter()
            .find(|(_, name)| *name == kind)
            .map(|(t, _)| *t as i32)
            .unwrap_or_default(),
        primary_metric: str_of(c, &["primary_metric"]),
        secondary_metrics: c
            .get("secondary_metrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect(),
        min_duration_days: c
            .get("min_duration_days")
            .and_then(Value::as_i64)
            .and_then(|d| i32::try_from(d).ok())
            .unwrap_or_default(),
        split,
        holdout_percent: num_of(c, &["holdout_percent"]).unwrap_or_default(),
        scope: str_of(c, &["scope"]),
        notes: str_of(c, &["notes"]),
    })
}

/// An experiment config as its column's JSON text; none is NULL.
pub fn config_to_json(
    field: &str,
    config: Option<&ExperimentConfig>,
    v: &mut Violations,
) -> Option<String> {
    let c = config?;
    let at = |name: &str| format!("{field}.{name}");
    let mut object = Map::new();
    if let Some(kind) = v.optional_enum::<ExperimentType>(&at("type"), c.r#type) {
        let name = EXPERIMENT_TYPES
            .iter()
            .find(|(t, _)| *t == kind)
            .map(|(_, name)| *name);
        if let Some(name) = name {
            object.insert("type".into(), name.into());
        }
    }
    if let Some(metric) = v.optional(&at("primary_metric"), &c.primary_metric, SHORT_TEXT) {
        object.insert("primary_metric".into(), metric.into());
    }
    if c.secondary_metrics.len() > MAX_LIST_ITEMS {
        v.add(
            at("secondary_metrics"),
            format!("at most {MAX_LIST_ITEMS} metrics"),
        );
    }
    let secondary: Vec<String> = c
        .secondary_metrics
        .iter()
        .enumerate()
        .map(|(i, m)| v.required(&format!("{field}.secondary_metrics[{i}]"), m, SHORT_TEXT))
        .collect();
    if !secondary.is_empty() {
        object.insert("secondary_metrics".into(), json!(secondary));
    }
    if !(0..=3650).contains(&c.min_duration_days) {
        v.add(at("min_duration_days"), "must be between 0 and 3650");
    } else if c.min_duration_days > 0 {
        object.insert("min_duration_days".into(), c.min_duration_days.into());
    }
    if !c.split.is_empty() {
        if c.split.len() > MAX_LIST_ITEMS {
            v.add(at("split"), format!("at most {MAX_LIST_ITEMS} variants"));
        }
        let mut split = Map::new();
        let mut total = 0.0;
        let mut variants: Vec<_> = c.split.iter().collect();
        variants.sort_by(|a, b| a.0.cmp(b.0));
        for (name, share) in variants {
            let path = format!("{field}.split[{name:?}]");
            let name = v.required(&path, name, SHORT_TEXT);
            let share = v.number(&path, *share, Some(0.0..=100.0));
            total += share;
            if let Some(number) = serde_json::Number::from_f64(share) {
                split.insert(name, number.into());
            }
        }
        if total > 100.0 + 1e-9 {
            v.add(at("split"), "shares must add up to at most 100");
        }
        object.insert("split".into(), Value::Object(split));
    }
    if c.holdout_percent != 0.0 {
        let share = v.number(&at("holdout_percent"), c.holdout_percent, Some(0.0..=100.0));
        if let Some(number) = serde_json::Number::from_f64(share) {
            object.insert("holdout_percent".into(), number.into());
        }
    }
    if let Some(scope) = v.optional(&at("scope"), &c.scope, SHORT_TEXT) {
        object.insert("scope".into(), scope.into());
    }
    if let Some(notes) = v.optional(&at("notes"), &c.notes, LONG_TEXT) {
        object.insert("notes".into(), notes.into());
    }
    if object.is_empty() {
        return None;
    }
    Some(v.json_text(field, &Value::Object(object)))
}

pub fn results_from_json(text: Option<&str>) -> Option<ExperimentResults> {
    let value = parse(text);
    let r = value.as_object()?;
    Some(ExperimentResults {
        metrics: r.get("metrics").map(metrics_from_value).unwrap_or_default(),
        summary: str_of(r, &["summary"]),
        sample_size: r
            .get("sample_size")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        confidence: num_of(r, &["confidence"]),
    })
}

/// Experiment results as their column's JSON text; none is NULL.
pub fn results_to_json(
    field: &str,
    results: Option<&ExperimentResults>,
    v: &mut Violations,
) -> Option<String> {
    let r = results?;
    let at = |name: &str| format!("{field}.{name}");
    let mut object = Map::new();
    if !r.metrics.is_empty() {
        object.insert(
            "metrics".into(),
            metrics_value(&at("metrics"), &r.metrics, v),
        );
    }
    if let Some(summary) = v.optional(&at("summary"), &r.summary, LONG_TEXT) {
        object.insert("summary".into(), summary.into());
    }
    if r.sample_size < 0 {
        v.add(at("sample_size"), "must not be negative");
    } else if r.sample_size > 0 {
        object.insert("sample_size".into(), r.sample_size.into());
    }
    if let Some(confidence) = r.confidence {
        let confidence = v.number(&at("confidence"), confidence, Some(0.0..=1.0));
        if let Some(number) = serde_json::Number::from_f64(confidence) {
            object.insert("confidence".into(), number.into());
        }
    }
    if object.is_empty() {
        return None;
    }
    Some(v.json_text(field, &Value::Object(object)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_release_json_reads_back() {
        let metrics = metrics_from_json(Some(
            r#"[{"key":"rate","label":"Rate","unit":"percent","baseline":31,"target":45},
                {"key":"rate2","value":36.5}, 7, "x"]"#,
        ));
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[0].baseline, Some(31.0));
        assert_eq!(metrics[1].current, Some(36.5));
        let refs = refs_from_json(Some(
            r#"[{"system":"jira","key":"GROW-12","url":"https://x"}]"#,
        ));
        assert_eq!(refs[0].id, "GROW-12");
        let config = config_from_json(Some(
            r#"{"type":"ab_test","split":{"control":50,"treatment":50},"min_duration_days":14}"#,
        ))
        .expect("config");
        assert_eq!(config.r#type, ExperimentType::AbTest as i32);
        assert_eq!(config.split.get("control"), Some(&50.0));
        // Shapes that do not fit read as empty, never as an error.
        assert!(metrics_from_json(Some(r#"{"not":"a list"}"#)).is_empty());
        assert!(tags_from_json(Some("not json")).is_empty());
        assert!(config_from_json(Some("[1]")).is_none());
        let odd =
            config_from_json(Some(r#"{"type":"weird","min_duration_days":"x"}"#)).expect("config");
        assert_eq!(odd.r#type, 0);
        assert_eq!(odd.min_duration_days, 0);
    }

    #[test]
    fn written_json_keeps_the_first_release_shape_and_round_trips() {
        let mut v = Violations::new();
        let metric = Metric {
            key: "rate".into(),
            label: "Rate".into(),
            unit: "%".into(),
            baseline: Some(1.0),
            target: None,
            current: Some(2.5),
        };
        let text = metrics_to_json("m", std::slice::from_ref(&metric), &mut v).expect("json");
        assert!(text.contains(r#""value":2.5"#), "{text}");
        assert_eq!(metrics_from_json(Some(&text)), vec![metric]);
        let config = ExperimentConfig {
            r#type: ExperimentType::Holdout as i32,
            holdout_percent: 20.0,
            ..Default::default()
        };
        let text = config_to_json("c", Some(&config), &mut v).expect("json");
        assert_eq!(config_from_json(Some(&text)), Some(config));
        assert!(v.finish().is_ok());
    }

    #[test]
    fn malformed_documents_are_field_violations() {
        let mut v = Violations::new();
        let bad = Metric {
            key: String::new(),
            current: Some(f64::INFINITY),
            ..Default::default()
        };
        metrics_to_json("outcome.target_metrics", &[bad], &mut v);
        refs_to_json(
            "outcome.external_refs",
            &[ExternalRef {
                system: "jira".into(),
                id: "X-1".into(),
                url: "ftp://x".into(),
            }],
            &mut v,
        );
        let config = ExperimentConfig {
            r#type: 99,
            split: [("a".to_owned(), 80.0), ("b".to_owned(), 30.0)].into(),
            ..Default::default()
        };
        config_to_json("h.experiment_config", Some(&config), &mut v);
        let Err(codeops_platform::ApiError::InvalidArgument(violations)) = v.finish() else {
            panic!("expected violations");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "outcome.target_metrics[0].key",
                "outcome.target_metrics[0].current",
                "outcome.external_refs[0].url",
                "h.experiment_config.type",
                "h.experiment_config.split",
            ]
        );
    }
}
