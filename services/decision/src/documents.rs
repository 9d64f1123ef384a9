//! The typed JSON documents of decision's TEXT columns: options (and the
//! selected option) and tags are proto messages in the API and JSON text in
//! the audited columns, in the shape the seeds and the first release use:
//! `[{"id", "title", "description", "pros": [..], "cons": [..]}]`.
//!
//! Writing validates into field violations; reading never fails (JSON that
//! does not fit reads back as far as it fits).

use codeops_platform::Violations;
use codeops_platform::validate::{LONG_TEXT, MAX_LIST_ITEMS, SHORT_TEXT, TITLE_TEXT};
use codeops_proto::decision::DecisionOption;
use serde_json::{Map, Value, json};

/// Pros or cons of one option, at most.
const MAX_ARGUMENTS: usize = 50;

/// The JSON of a column, or `Value::Null` when it is empty or not JSON.
pub fn parse(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn option_from_object(o: &Map<String, Value>) -> DecisionOption {
    let text = |key: &str| {
        o.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    DecisionOption {
        id: text("id"),
        title: text("title"),
        description: text("description"),
        pros: strings(o.get("pros")),
        cons: strings(o.get("cons")),
    }
}

pub fn options_from_json(text: Option<&str>) -> Vec<DecisionOption> {
    parse(text)
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(option_from_object)
        .collect()
}

pub fn option_from_json(text: Option<&str>) -> Option<DecisionOption> {
    parse(text).as_object().map(option_from_object)
}

pub fn option_to_value(o: &DecisionOption) -> Value {
    json!({
        "id": o.id,
        "title": o.title,
        "description": o.description,
        "pros": o.pros,
        "cons": o.cons,
    })
}

/// Validated options as the column's JSON text: ids and titles required and
/// unique ids, texts within their widths, at most 100 options.
pub fn options_to_json(
    field: &str,
    options: &[DecisionOption],
    v: &mut Violations,
) -> Option<String> {
    if options.is_empty() {
        return None;
    }
    if options.len() > MAX_LIST_ITEMS {
        v.add(
            field,
            format!("at most {MAX_LIST_ITEMS} options, got {}", options.len()),
        );
    }
    let mut ids: Vec<String> = Vec::new();
    let mut items = Vec::with_capacity(options.len());
    for (i, o) in options.iter().enumerate() {
        let at = |name: &str| format!("{field}[{i}].{name}");
        let id = v.required(&at("id"), &o.id, SHORT_TEXT);
        if let Some(first) = ids.iter().position(|seen| !id.is_empty() && *seen == id) {
            v.add(at("id"), format!("duplicates the id of {field}[{first}]"));
        }
        ids.push(id.clone());
        let title = v.required(&at("title"), &o.title, TITLE_TEXT);
        let description = v
            .optional(&at("description"), &o.description, LONG_TEXT)
            .unwrap_or_default();
        let mut arguments = |name: &str, values: &[String]| -> Vec<String> {
            if values.len() > MAX_ARGUMENTS {
                v.add(
                    at(name),
                    format!("at most {MAX_ARGUMENTS}, got {}", values.len()),
                );
            }
            values
                .iter()
                .enumerate()
                .filter_map(|(j, text)| v.optional(&format!("{}[{j}]", at(name)), text, TITLE_TEXT))
                .collect()
        };
        let pros = arguments("pros", &o.pros);
        let cons = arguments("cons", &o.cons);
        items.push(option_to_value(&DecisionOption {
            id,
            title,
            description,
            pros,
            cons,
        }));
    }
    Some(v.json_text(field, &Value::Array(items)))
}

pub fn tags_from_json(text: Option<&str>) -> Vec<String> {
    strings(Some(&parse(text)))
}

/// Validated tags as JSON text; none stores NULL.
pub fn tags_to_json(field: &str, tags: &[String], v: &mut Violations) -> Option<String> {
    let tags = v.tags(field, tags);
    (!tags.is_empty()).then(|| Value::from(tags).to_string())
}
