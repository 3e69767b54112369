//! Parameter schemas: the subset of JSON Schema the generator maps to Rust types (the table in `docs/generate.md`).
//!
//! Supported: `integer` (`int32`, `int64` or no format), `number` (`float`, `double` or no
//! format), `string` (any format; `date` and `date-time` are mapped specially), `boolean`,
//! `enum` of strings (with `type: string`), `object` with `properties` (a struct), `object`
//! without `properties` (a free-form map) and `array` with `items`. Keywords the generator
//! cannot honour (`oneOf`, `$ref`, `minimum`, ...) are rejected instead of silently ignored.

use std::collections::HashMap;

use heck::{ToSnakeCase, ToUpperCamelCase};
use serde_json::{Map, Number, Value};

use crate::report::{did_you_mean, hint_did_you_mean, Reporter};
use crate::yaml::{Node, NodeKind, Scalar, Span};

/// Keywords a parameter schema may use.
const KEYWORDS: &[&str] = &[
    "type",
    "format",
    "description",
    "title",
    "properties",
    "required",
    "items",
    "enum",
    "default",
    "example",
    "examples",
];

/// JSON Schema keywords the generator does not support, with what to do instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("oneOf", "describe one shape per task, or use a free-form `type: object`"),
    ("anyOf", "describe one shape per task, or use a free-form `type: object`"),
    ("allOf", "merge the schemas into one `properties` list"),
    ("not", "describe the allowed shape directly"),
    ("$ref", "define the object inline under `properties`"),
    ("$defs", "define the object inline under `properties`"),
    ("definitions", "define the object inline under `properties`"),
    ("additionalProperties", "an object without `properties` is already a free-form map; with `properties` it is a struct"),
    ("patternProperties", "use an object without `properties` (a free-form map)"),
    ("const", "use `enum` with a single value"),
    ("nullable", "leave the property out of `required` to make it optional"),
    ("minimum", "check the range in your executor; the generated type does not enforce it"),
    ("maximum", "check the range in your executor; the generated type does not enforce it"),
    ("exclusiveMinimum", "check the range in your executor; the generated type does not enforce it"),
    ("exclusiveMaximum", "check the range in your executor; the generated type does not enforce it"),
    ("multipleOf", "check it in your executor; the generated type does not enforce it"),
    ("minLength", "check the length in your executor; the generated type does not enforce it"),
    ("maxLength", "check the length in your executor; the generated type does not enforce it"),
    ("pattern", "check the pattern in your executor; the generated type does not enforce it"),
    ("minItems", "check the length in your executor; the generated type does not enforce it"),
    ("maxItems", "check the length in your executor; the generated type does not enforce it"),
    ("uniqueItems", "check it in your executor; the generated type does not enforce it"),
];

const TYPES: &[&str] = &["integer", "number", "string", "boolean", "object", "array"];

/// The Rust-relevant shape of a schema, used to check `default` values and handler rules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    Integer {
        int32: bool,
    },
    Number,
    /// A string, with the formats whose values the generator may parse.
    String(Option<StringFormat>),
    Boolean,
    Enum(Vec<String>),
    Object(Vec<Property>),
    Map,
    Array(Box<Shape>),
}

impl Shape {
    fn describe(&self) -> String {
        match self {
            Shape::Integer { int32: true } => "an integer (int32)".into(),
            Shape::Integer { int32: false } => "an integer".into(),
            Shape::Number => "a number".into(),
            Shape::String(Some(StringFormat::Date)) => "a date string (YYYY-MM-DD)".into(),
            Shape::String(Some(StringFormat::DateTime)) => {
                "an RFC 3339 date-time string (e.g. 2024-01-31T12:00:00Z)".into()
            }
            Shape::String(None) => "a string".into(),
            Shape::Boolean => "a boolean (true or false)".into(),
            Shape::Enum(values) => format!(
                "one of {}",
                values
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Shape::Object(_) => "a mapping with the object's properties".into(),
            Shape::Map => "a mapping".into(),
            Shape::Array(_) => "a list".into(),
        }
    }
}

/// String formats that map to typed values, so their defaults must parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StringFormat {
    Date,
    DateTime,
}

/// One property of an object schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Property {
    pub name: String,
    pub shape: Shape,
    pub required: bool,
    pub default: Option<Value>,
    /// Where the property's name is written.
    pub key_span: Span,
}

/// A checked top-level `parameters` schema.
pub(crate) struct Checked {
    pub properties: Vec<Property>,
    pub json: Value,
}

/// Checks a task's `parameters` node. Reports every problem; returns the shape and the
/// schema as JSON only when it has none.
pub(crate) fn check_parameters(r: &mut Reporter<'_>, key: &Node, node: &Node) -> Option<Checked> {
    let before = r.error_count();
    let shape = check_schema(r, key, node, "`parameters`", true);
    if r.error_count() > before {
        return None;
    }
    let json = match to_json(node) {
        Ok(json) => Some(json),
        Err((bad, why)) => {
            r.error_at(bad, why, None);
            None
        }
    };
    match (shape, json) {
        (Some(Shape::Object(properties)), Some(json)) => Some(Checked { properties, json }),
        (Some(Shape::Map), Some(json)) => Some(Checked {
            properties: Vec::new(),
            json,
        }),
        _ => None,
    }
}

fn entry<'n>(entries: &'n [(Node, Node)], key: &str) -> Option<(&'n Node, &'n Node)> {
    entries
        .iter()
        .find(|(k, _)| k.scalar_text() == Some(key))
        .map(|(k, v)| (k, v))
}

/// Checks one schema. `anchor` is the key naming it (used to point at missing keywords);
/// `what` names it in messages.
fn check_schema(
    r: &mut Reporter<'_>,
    anchor: &Node,
    node: &Node,
    what: &str,
    top: bool,
) -> Option<Shape> {
    let Some(entries) = node.as_map() else {
        if matches!(node.as_scalar(), Some(Scalar::Null)) {
            let hint = if top {
                "write `type: object` and the parameters under `properties`, or remove `parameters`"
            } else {
                "give it a `type`, e.g. `type: string`"
            };
            r.error_at(
                anchor,
                format!("the schema of {what} is empty"),
                Some(hint.into()),
            );
            return None;
        }
        let hint = match node.as_scalar() {
            Some(Scalar::Str(t)) if TYPES.contains(&t.as_str()) => Some(format!(
                "write `type: {t}` on its own line, indented under the name"
            )),
            _ => Some("write a mapping such as `type: string`".into()),
        };
        r.error_at(
            node,
            format!(
                "the schema of {what} must be a mapping with a `type`, found {}",
                node.kind_name()
            ),
            hint,
        );
        return None;
    };
    let mut ok = true;
    let mut seen: HashMap<&str, &Node> = HashMap::new();
    for (key, _) in entries {
        let Some(name) = key.scalar_text() else {
            r.error_at(
                key,
                format!("a schema keyword in {what} must be a plain name"),
                None,
            );
            ok = false;
            continue;
        };
        if let Some(first) = seen.get(name) {
            r.error_at(
                key,
                format!(
                    "duplicate keyword `{name}` in {what} (first written on line {})",
                    first.span.start.line
                ),
                Some("remove one of them".into()),
            );
            ok = false;
            continue;
        }
        seen.insert(name, key);
        if KEYWORDS.contains(&name) {
            continue;
        }
        ok = false;
        if let Some((_, advice)) = UNSUPPORTED.iter().find(|(k, _)| *k == name) {
            r.error_at(
                key,
                format!("`{name}` in {what} is not supported by the generator"),
                Some((*advice).to_string()),
            );
        } else {
            let hint = hint_did_you_mean(name, KEYWORDS.iter().copied()).or_else(|| {
                Some(format!(
                    "a schema may use {}",
                    KEYWORDS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            });
            r.error_at(
                key,
                format!("unknown schema keyword `{name}` in {what}"),
                hint,
            );
        }
    }
    for text_key in ["description", "title", "format"] {
        if let Some((_, value)) = entry(entries, text_key) {
            if value.as_scalar().is_none() || matches!(value.as_scalar(), Some(Scalar::Null)) {
                r.error_at(
                    value,
                    format!(
                        "`{text_key}` in {what} must be text, found {}",
                        value.kind_name()
                    ),
                    None,
                );
                ok = false;
            }
        }
    }

    let enum_entry = entry(entries, "enum");
    let composed = ["oneOf", "anyOf", "allOf", "not", "$ref"]
        .iter()
        .any(|k| entry(entries, k).is_some());
    let Some((type_key, type_node)) = entry(entries, "type") else {
        if composed {
            // The unsupported keyword was reported; a missing `type` would only repeat it.
            return None;
        }
        let hint = if enum_entry.is_some() {
            "add `type: string` (only string enums are supported)".to_string()
        } else if top {
            "add `type: object` and list the parameters under `properties`".to_string()
        } else {
            format!("add a `type`: one of {}", TYPES.join(", "))
        };
        r.error_at(
            anchor,
            format!("the schema of {what} has no `type`"),
            Some(hint),
        );
        // Keep checking the properties of what is evidently meant to be an object, so their
        // problems are reported in the same run.
        if entry(entries, "properties").is_some() {
            let _ = check_object(r, entries, what);
        }
        return None;
    };
    let ty = match &type_node.kind {
        NodeKind::Scalar {
            value: Scalar::Str(t),
            ..
        } if TYPES.contains(&t.as_str()) => t.as_str(),
        NodeKind::Seq(_) => {
            r.error_at(
                type_node,
                format!(
                    "`type` in {what} must be a single type; type lists (unions) are not supported"
                ),
                Some("to make a property optional, leave it out of `required`".into()),
            );
            return None;
        }
        NodeKind::Scalar {
            value: Scalar::Null,
            text,
            ..
        } if text == "null" => {
            r.error_at(
                type_node,
                format!("`type: null` in {what} is not supported"),
                Some("to make a property optional, leave it out of `required`".into()),
            );
            return None;
        }
        _ => {
            let text = type_node.scalar_text().unwrap_or("");
            let hint = hint_did_you_mean(text, TYPES.iter().copied())
                .or_else(|| Some(format!("use one of {}", TYPES.join(", "))));
            r.error_at(
                type_node,
                format!("unsupported type `{text}` in {what}"),
                hint,
            );
            return None;
        }
    };
    if top && ty != "object" {
        r.error_at(
            type_node,
            format!("`parameters` must have `type: object`, found `type: {ty}`"),
            Some("a task takes one object; put the values under `properties`".into()),
        );
        return None;
    }

    // Keywords that only make sense for some types.
    for (keyword, allowed_for) in [
        ("properties", "object"),
        ("required", "object"),
        ("items", "array"),
    ] {
        if ty != allowed_for {
            if let Some((key, _)) = entry(entries, keyword) {
                r.error_at(key, format!("`{keyword}` in {what} only applies to `type: {allowed_for}`, but the type is `{ty}`"), None);
                ok = false;
            }
        }
    }
    if enum_entry.is_some() && ty != "string" {
        let (key, _) = enum_entry.unwrap_or((type_key, type_node));
        r.error_at(
            key,
            format!("`enum` in {what} is only supported with `type: string`"),
            Some("write the values as strings and set `type: string`".into()),
        );
        ok = false;
    }

    let format = entry(entries, "format").and_then(|(_, v)| v.scalar_text().map(|t| (t, v)));
    let shape = match ty {
        "integer" => match format {
            None => Some(Shape::Integer { int32: false }),
            Some(("int32", _)) => Some(Shape::Integer { int32: true }),
            Some(("int64", _)) => Some(Shape::Integer { int32: false }),
            Some((other, node)) => {
                r.error_at(
                    node,
                    format!("unsupported integer format `{other}` in {what}"),
                    Some("use `int32` (i32) or `int64` (i64), or leave `format` out (i64)".into()),
                );
                None
            }
        },
        "number" => match format {
            None | Some(("float" | "double", _)) => Some(Shape::Number),
            Some((other, node)) => {
                r.error_at(
                    node,
                    format!("unsupported number format `{other}` in {what}"),
                    Some("use `float` (f32) or `double` (f64), or leave `format` out (f64)".into()),
                );
                None
            }
        },
        "string" => match enum_entry {
            Some((_, values)) => check_enum(r, values, what).map(Shape::Enum),
            None => Some(Shape::String(match format {
                Some(("date", _)) => Some(StringFormat::Date),
                Some(("date-time", _)) => Some(StringFormat::DateTime),
                _ => None,
            })),
        },
        "boolean" | "object" | "array" => {
            if let Some((_, node)) = format {
                r.error_at(
                    node,
                    format!("`format` does not apply to `type: {ty}` in {what}"),
                    Some("remove `format`".into()),
                );
                ok = false;
            }
            match ty {
                "boolean" => Some(Shape::Boolean),
                "object" => check_object(r, entries, what),
                _ => match entry(entries, "items") {
                    Some((items_key, items)) => {
                        check_schema(r, items_key, items, &format!("the items of {what}"), false)
                            .map(|s| Shape::Array(Box::new(s)))
                    }
                    None => {
                        r.error_at(
                            type_node,
                            format!("{what} is an array without `items`"),
                            Some("describe the elements, e.g. `items: {type: string}`".into()),
                        );
                        None
                    }
                },
            }
        }
        _ => None,
    };
    let shape = shape?;
    if let Some((_, default)) = entry(entries, "default") {
        if !check_value(r, &shape, default, &format!("the default of {what}")) {
            ok = false;
        }
    }
    ok.then_some(shape)
}

fn check_enum(r: &mut Reporter<'_>, node: &Node, what: &str) -> Option<Vec<String>> {
    let NodeKind::Seq(items) = &node.kind else {
        r.error_at(
            node,
            format!(
                "`enum` in {what} must be a list of strings, found {}",
                node.kind_name()
            ),
            Some("write e.g. `enum: [low, medium, high]`".into()),
        );
        return None;
    };
    if items.is_empty() {
        r.error_at(
            node,
            format!("`enum` in {what} is empty"),
            Some("list the allowed values, e.g. `enum: [low, high]`".into()),
        );
        return None;
    }
    let mut values = Vec::new();
    let mut variants: HashMap<String, String> = HashMap::new();
    let mut ok = true;
    for item in items {
        let Some(value) = item.as_str() else {
            let text = item.scalar_text().unwrap_or("");
            r.error_at(
                item,
                format!(
                    "enum values in {what} must be strings, found {}",
                    item.kind_name()
                ),
                Some(format!("quote it: \"{text}\"")),
            );
            ok = false;
            continue;
        };
        if !value.chars().any(|c| c.is_ascii_alphanumeric()) {
            r.error_at(item, format!("enum value `{value}` in {what} has no letters or digits, so it cannot become a Rust enum variant"), None);
            ok = false;
            continue;
        }
        let variant = value.to_upper_camel_case();
        if let Some(previous) = variants.get(&variant) {
            let message = if previous == value {
                format!("duplicate enum value `{value}` in {what}")
            } else {
                format!("enum values `{previous}` and `{value}` in {what} both become the Rust variant `{variant}`")
            };
            r.error_at(item, message, Some("remove or rename one of them".into()));
            ok = false;
            continue;
        }
        variants.insert(variant, value.to_string());
        values.push(value.to_string());
    }
    ok.then_some(values)
}

/// Whether a property name can become a Rust field name.
fn is_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.chars().any(|c| c.is_ascii_alphanumeric())
}

fn check_object(r: &mut Reporter<'_>, entries: &[(Node, Node)], what: &str) -> Option<Shape> {
    let Some((props_key, props_node)) = entry(entries, "properties") else {
        if let Some((_, required)) = entry(entries, "required") {
            let names = string_list(r, required, what)?;
            if let Some((node, name)) = names.first() {
                r.error_at(
                    node,
                    format!(
                        "`required` in {what} names `{name}`, but the object has no `properties`"
                    ),
                    Some("add `properties`, or remove `required`".into()),
                );
            }
            return None;
        }
        return Some(Shape::Map);
    };
    let Some(prop_entries) = props_node.as_map() else {
        if matches!(props_node.as_scalar(), Some(Scalar::Null)) {
            // `properties:` with nothing under it: an object with no fields.
            return Some(Shape::Object(Vec::new()));
        }
        r.error_at(
            props_node,
            format!(
                "`properties` in {what} must be a mapping from property names to schemas, found {}",
                props_node.kind_name()
            ),
            None,
        );
        let _ = props_key;
        return None;
    };
    let mut ok = true;
    let mut properties: Vec<Property> = Vec::new();
    let mut fields: HashMap<String, String> = HashMap::new();
    for (key, value) in prop_entries {
        let Some(name) = key.scalar_text() else {
            r.error_at(
                key,
                format!("property names in {what} must be plain text"),
                None,
            );
            ok = false;
            continue;
        };
        if !is_property_name(name) {
            r.error_at(
                key,
                format!("property name `{name}` in {what} cannot become a Rust field name"),
                Some(
                    "start with a letter or `_` and use only ASCII letters, digits, `_` and `-`"
                        .into(),
                ),
            );
            ok = false;
            continue;
        }
        let field = name.to_snake_case();
        if let Some(previous) = fields.get(&field) {
            let message = if previous == name {
                format!("duplicate property `{name}` in {what}")
            } else {
                format!("properties `{previous}` and `{name}` in {what} both become the Rust field `{field}`")
            };
            r.error_at(key, message, Some("remove or rename one of them".into()));
            ok = false;
            continue;
        }
        fields.insert(field, name.to_string());
        let inner_what = if what == "`parameters`" {
            format!("parameter `{name}`")
        } else {
            format!("property `{name}` of {what}")
        };
        let shape = check_schema(r, key, value, &inner_what, false);
        let default = value
            .as_map()
            .and_then(|m| entry(m, "default"))
            .and_then(|(_, d)| to_json(d).ok());
        match shape {
            Some(shape) => properties.push(Property {
                name: name.to_string(),
                shape,
                required: false,
                default,
                key_span: key.span,
            }),
            None => ok = false,
        }
    }
    if let Some((_, required)) = entry(entries, "required") {
        let names = string_list(r, required, what)?;
        let mut seen: Vec<&str> = Vec::new();
        for (node, name) in &names {
            if seen.contains(&name.as_str()) {
                r.error_at(
                    node,
                    format!("`{name}` is listed twice in `required` of {what}"),
                    Some("remove the duplicate".into()),
                );
                ok = false;
                continue;
            }
            seen.push(name);
            match properties.iter_mut().find(|p| p.name == *name) {
                Some(property) => property.required = true,
                None if prop_entries
                    .iter()
                    .any(|(k, _)| k.scalar_text() == Some(name.as_str())) =>
                {
                    // The property exists but its schema had errors, already reported.
                }
                None => {
                    let candidates: Vec<&str> = prop_entries
                        .iter()
                        .filter_map(|(k, _)| k.scalar_text())
                        .collect();
                    let hint = hint_did_you_mean(name, candidates.iter().copied()).or_else(|| {
                        Some(format!(
                            "add `{name}` under `properties`, or remove it from `required`"
                        ))
                    });
                    r.error_at(
                        node,
                        format!("`required` in {what} names `{name}`, which is not a property"),
                        hint,
                    );
                    ok = false;
                }
            }
        }
    }
    ok.then_some(Shape::Object(properties))
}

fn string_list<'n>(
    r: &mut Reporter<'_>,
    node: &'n Node,
    what: &str,
) -> Option<Vec<(&'n Node, String)>> {
    let NodeKind::Seq(items) = &node.kind else {
        r.error_at(
            node,
            format!(
                "`required` in {what} must be a list of property names, found {}",
                node.kind_name()
            ),
            Some("write e.g. `required: [userId, amount]`".into()),
        );
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_str() {
            Some(name) => out.push((item, name.to_string())),
            None => {
                r.error_at(
                    item,
                    format!(
                        "`required` in {what} must list property names, found {}",
                        item.kind_name()
                    ),
                    None,
                );
                return None;
            }
        }
    }
    Some(out)
}

/// Checks that a literal value (a `default`) fits `shape`; reports and returns false if not.
fn check_value(r: &mut Reporter<'_>, shape: &Shape, node: &Node, what: &str) -> bool {
    let mismatch = |r: &mut Reporter<'_>, extra: Option<String>| {
        r.error_at(
            node,
            format!(
                "{what} must be {}, found {}",
                shape.describe(),
                node.kind_name()
            ),
            extra,
        );
        false
    };
    if matches!(node.as_scalar(), Some(Scalar::Null)) {
        r.error_at(
            node,
            format!("{what} is empty (null)"),
            Some("give a value, or remove `default`".into()),
        );
        return false;
    }
    match (shape, &node.kind) {
        (
            Shape::Integer { int32 },
            NodeKind::Scalar {
                value: Scalar::Int(v),
                ..
            },
        ) => {
            if *int32 && i32::try_from(*v).is_err() {
                r.error_at(
                    node,
                    format!("{what} is {v}, which does not fit in int32"),
                    Some("use `format: int64`, or a smaller value".into()),
                );
                return false;
            }
            true
        }
        (
            Shape::Number,
            NodeKind::Scalar {
                value: Scalar::Int(_),
                ..
            },
        ) => true,
        (
            Shape::Number,
            NodeKind::Scalar {
                value: Scalar::Float(f),
                ..
            },
        ) => {
            if f.is_finite() {
                true
            } else {
                r.error_at(node, format!("{what} must be a finite number"), None);
                false
            }
        }
        (
            Shape::String(format),
            NodeKind::Scalar {
                value: Scalar::Str(text),
                ..
            },
        ) => {
            let parses = match format {
                None => true,
                Some(StringFormat::Date) => {
                    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
                }
                Some(StringFormat::DateTime) => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            };
            if !parses {
                r.error_at(
                    node,
                    format!("{what} must be {}, found `{text}`", shape.describe()),
                    None,
                );
            }
            parses
        }
        (Shape::String(_), NodeKind::Scalar { text, .. }) => {
            mismatch(r, Some(format!("quote it to make it a string: \"{text}\"")))
        }
        (
            Shape::Boolean,
            NodeKind::Scalar {
                value: Scalar::Bool(_),
                ..
            },
        ) => true,
        (Shape::Enum(values), NodeKind::Scalar { text, value, .. }) => {
            if matches!(value, Scalar::Str(_)) && values.contains(text) {
                true
            } else {
                let hint = hint_did_you_mean(text, values.iter().map(String::as_str));
                r.error_at(
                    node,
                    format!("{what} must be {}, found `{text}`", shape.describe()),
                    hint,
                );
                false
            }
        }
        (Shape::Map, NodeKind::Map(_)) => true,
        (Shape::Object(properties), NodeKind::Map(entries)) => {
            let mut ok = true;
            for (key, value) in entries {
                let name = key.scalar_text().unwrap_or("");
                match properties.iter().find(|p| p.name == name) {
                    Some(p) => {
                        ok &= check_value(r, &p.shape, value, &format!("{what} at `{name}`"))
                    }
                    None => {
                        let hint =
                            hint_did_you_mean(name, properties.iter().map(|p| p.name.as_str()));
                        r.error_at(
                            key,
                            format!("{what} has `{name}`, which is not a property of the object"),
                            hint,
                        );
                        ok = false;
                    }
                }
            }
            for p in properties
                .iter()
                .filter(|p| p.required && p.default.is_none())
            {
                if !entries
                    .iter()
                    .any(|(k, _)| k.scalar_text() == Some(p.name.as_str()))
                {
                    r.error_at(
                        node,
                        format!("{what} lacks the required property `{}`", p.name),
                        None,
                    );
                    ok = false;
                }
            }
            ok
        }
        (Shape::Array(item_shape), NodeKind::Seq(items)) => {
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                ok &= check_value(r, item_shape, item, &format!("{what} (item {})", i + 1));
            }
            ok
        }
        _ => mismatch(r, None),
    }
}

/// Converts a node to JSON; on failure returns the node JSON cannot hold and why.
pub(crate) fn to_json(node: &Node) -> Result<Value, (&Node, &'static str)> {
    match &node.kind {
        NodeKind::Scalar { value, .. } => match value {
            Scalar::Null => Ok(Value::Null),
            Scalar::Bool(b) => Ok(Value::Bool(*b)),
            Scalar::Int(i) => Ok(Value::Number((*i).into())),
            Scalar::Float(f) => Number::from_f64(*f)
                .map(Value::Number)
                .ok_or((node, "infinite or NaN numbers cannot be used in a schema")),
            Scalar::Str(s) => Ok(Value::String(s.clone())),
        },
        NodeKind::Seq(items) => items
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        NodeKind::Map(entries) => {
            let mut out = Map::new();
            for (key, value) in entries {
                let name = key
                    .scalar_text()
                    .ok_or((key, "mapping keys in a schema must be plain text"))?;
                out.insert(name.to_string(), to_json(value)?);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Whether `name` is a property whose shape is an integer.
pub(crate) fn integer_property<'p>(properties: &'p [Property], name: &str) -> Option<&'p Property> {
    properties
        .iter()
        .find(|p| p.name == name && matches!(p.shape, Shape::Integer { .. }))
}

/// A did-you-mean over property names, for handler checks.
pub(crate) fn closest_property<'p>(properties: &'p [Property], name: &str) -> Option<&'p str> {
    did_you_mean(name, properties.iter().map(|p| p.name.as_str()))
}
