//! Parameter types from JSON Schema, via typify.

use anchor_spec::model::Spec;
use serde_json::Value;

use crate::names::TaskNames;
use crate::{Error, Result};

/// The Rust code for every task's parameter types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamsCode {
    /// typify's output for every task with properties, as a token string.
    pub types: String,
    /// The tasks (by index) whose schema has no properties and get an empty struct.
    pub empty: Vec<usize>,
}

/// Runs typify over every task's schema in one type space, so shared built-in helpers are
/// emitted once.
pub(crate) fn generate_params(spec: &Spec) -> Result<ParamsCode> {
    let mut settings = typify::TypeSpaceSettings::default();
    // Plain structs with public fields read better than builders for task parameters.
    settings
        .with_struct_builder(false)
        .with_derive("PartialEq".to_string())
        // The `taskID` of an onFailed handler's parameters is typed `anchor_runtime::TaskId`
        // (see `prepare_schema`).
        .with_crate("anchor-runtime", typify::CrateVers::Any, None);
    let mut space = typify::TypeSpace::new(&settings);
    let mut empty = Vec::new();
    let mut any_types = false;
    // The root type of each task, to check afterwards that no two tasks share a type.
    let mut roots: Vec<(typify::TypeId, String)> = Vec::new();
    let handlers: Vec<&str> = spec
        .tasks
        .iter()
        .filter_map(|t| t.on_failed.as_deref())
        .collect();
    for (index, task) in spec.tasks.iter().enumerate() {
        let names = TaskNames::new(&task.name);
        let has_properties = task
            .parameters
            .schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|props| !props.is_empty());
        if !has_properties {
            // typify maps a property-less object to `serde_json::Map`, but every task needs
            // a named parameter struct, so the template emits an empty one.
            empty.push(index);
            continue;
        }
        let is_handler = handlers.contains(&task.name.as_str());
        let schema = prepare_schema(&task.parameters.schema, &task.name, is_handler);
        let schema: schemars::schema::Schema =
            serde_json::from_value(schema).map_err(|err| Error::Schema {
                task: task.name.clone(),
                message: format!("not a JSON Schema typify understands: {err}"),
            })?;
        let type_id = space
            .add_type_with_name(&schema, Some(names.params_type.clone()))
            .map_err(|err| Error::Schema {
                task: task.name.clone(),
                message: err.to_string(),
            })?;
        let ty = space.get_type(&type_id).map_err(|err| Error::Schema {
            task: task.name.clone(),
            message: err.to_string(),
        })?;
        if ty.name() != names.params_type {
            return Err(Error::Schema {
                task: task.name.clone(),
                message: format!(
                    "the schema maps to `{}` rather than a struct named `{}`; declare `type: object` with `properties`",
                    ty.name(),
                    names.params_type
                ),
            });
        }
        roots.push((type_id, task.name.clone()));
        any_types = true;
    }
    check_no_shared_types(&space, &roots)?;
    // The validator rejects `pattern` and string formats are narrowed above, so these
    // crates never appear; a user's crate must not need them.
    if space.uses_regress() || space.uses_uuid() {
        return Err(Error::Schema {
            task: spec.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
            message: "the schemas need the `regress` or `uuid` crate, which generated code may not depend on; remove `pattern` and `format: uuid`".into(),
        });
    }
    let types = if any_types {
        rewrite_crate_paths(&space.to_stream().to_string())
    } else {
        String::new()
    };
    Ok(ParamsCode { types, empty })
}

/// Fails when a named type is reachable from two tasks' parameter structs. typify reuses an
/// existing type when a name repeats, so this is how a name collision shows (task `A` with an
/// object property `bParameters` makes `AParametersBParameters`, which is also the struct of
/// a task `AParametersB`); without the check one task would silently get the other's fields.
fn check_no_shared_types(
    space: &typify::TypeSpace,
    roots: &[(typify::TypeId, String)],
) -> Result<()> {
    let mut owner: Vec<(typify::TypeId, &str)> = Vec::new();
    for (root, task) in roots {
        let mut stack = vec![root.clone()];
        let mut visited: Vec<typify::TypeId> = Vec::new();
        while let Some(id) = stack.pop() {
            if visited.contains(&id) {
                continue;
            }
            visited.push(id.clone());
            let Ok(ty) = space.get_type(&id) else {
                continue;
            };
            let named = match ty.details() {
                typify::TypeDetails::Struct(details) => {
                    stack.extend(details.properties().map(|(_, id)| id));
                    true
                }
                typify::TypeDetails::Enum(details) => {
                    for (_, variant) in details.variants() {
                        match variant {
                            typify::TypeEnumVariant::Simple => {}
                            typify::TypeEnumVariant::Tuple(ids) => stack.extend(ids),
                            typify::TypeEnumVariant::Struct(props) => {
                                stack.extend(props.into_iter().map(|(_, id)| id))
                            }
                        }
                    }
                    true
                }
                typify::TypeDetails::Newtype(details) => {
                    stack.push(details.inner());
                    true
                }
                typify::TypeDetails::Option(inner)
                | typify::TypeDetails::Vec(inner)
                | typify::TypeDetails::Set(inner)
                | typify::TypeDetails::Box(inner)
                | typify::TypeDetails::Array(inner, _) => {
                    stack.push(inner);
                    false
                }
                typify::TypeDetails::Map(key, value) => {
                    stack.extend([key, value]);
                    false
                }
                typify::TypeDetails::Tuple(items) => {
                    stack.extend(items);
                    false
                }
                typify::TypeDetails::Builtin(_)
                | typify::TypeDetails::Unit
                | typify::TypeDetails::String => false,
            };
            if !named {
                continue;
            }
            match owner.iter().find(|(known, _)| *known == id) {
                Some((_, other)) if other != task => {
                    return Err(Error::Schema {
                        task: task.clone(),
                        message: format!(
                            "the generated type `{}` is also generated for task `{other}` (the names collide); rename one of the tasks or properties",
                            ty.name()
                        ),
                    });
                }
                Some(_) => {}
                None => owner.push((id, task.as_str())),
            }
        }
    }
    Ok(())
}

/// String formats with their own Rust type; any other `format` of a string is only
/// documentation and the value stays a `String`.
const STRING_FORMATS: &[&str] = &["date", "date-time"];

/// Prepares a task's schema for typify: removes every `title` (typify names types after
/// titles and silently merges equal names across tasks, so names are derived from the task
/// and property path instead), drops string formats other than `date` and `date-time`
/// (typify would map `uuid` to a crate the user's crate lacks) and documents the root
/// struct.
fn prepare_schema(schema: &Value, task_name: &str, is_handler: bool) -> Value {
    let mut schema = schema.clone();
    if is_handler {
        type_task_id(&mut schema);
    }
    for_each_schema(&mut schema, &mut |map| {
        map.remove("title");
        let is_string = map.get("type").and_then(Value::as_str) == Some("string");
        let keep_format = map
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|format| STRING_FORMATS.contains(&format));
        if is_string && !keep_format {
            map.remove("format");
        }
        drop_defaulted_from_required(map);
    });
    if let Value::Object(root) = &mut schema {
        if !root.contains_key("description") {
            root.insert(
                "description".into(),
                Value::String(format!("Parameters of the `{task_name}` task.")),
            );
        }
    }
    schema
}

/// Types an onFailed handler's `taskID` parameter (an integer without a default: the id of
/// the task whose failure enqueued it) as `anchor_runtime::TaskId`, through typify's
/// `x-rust-type` extension, so that it goes to `Client::get_task` as it is.
fn type_task_id(schema: &mut Value) {
    let Some(task_id) = schema
        .get_mut("properties")
        .and_then(|props| props.get_mut("taskID"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let integer = task_id.get("type").and_then(Value::as_str) == Some("integer");
    if integer && !task_id.contains_key("default") {
        task_id.insert(
            "x-rust-type".into(),
            serde_json::json!({
                "crate": "anchor-runtime",
                "version": "*",
                "path": "anchor_runtime::TaskId",
            }),
        );
    }
}

/// Takes every property that has a `default` out of `required`. typify gives a `default`
/// to optional properties only (a required one must be present to decode), but a payload
/// may leave a defaulted parameter out whether or not it is required: a cron schedule or an
/// onFailed handler's `{ taskID }` payload is built from the defaults. As an optional
/// property with a default it is still a plain `T`, filled with the default when absent and
/// always serialised.
fn drop_defaulted_from_required(map: &mut serde_json::Map<String, Value>) {
    let defaulted: Vec<String> = match map.get("properties") {
        Some(Value::Object(props)) => props
            .iter()
            .filter(|(_, sub)| sub.get("default").is_some())
            .map(|(name, _)| name.clone())
            .collect(),
        _ => return,
    };
    if let Some(Value::Array(required)) = map.get_mut("required") {
        required.retain(|name| {
            name.as_str()
                .is_none_or(|name| !defaulted.iter().any(|d| d == name))
        });
        if required.is_empty() {
            map.remove("required");
        }
    }
}

/// Calls `visit` on a schema object and every subschema in it, but not on the maps that
/// merely hold subschemas by name (so a property named `title` is left alone).
fn for_each_schema(schema: &mut Value, visit: &mut dyn FnMut(&mut serde_json::Map<String, Value>)) {
    let Value::Object(map) = schema else { return };
    visit(map);
    for key in [
        "items",
        "additionalProperties",
        "not",
        "additionalItems",
        "contains",
    ] {
        if let Some(sub) = map.get_mut(key) {
            match sub {
                Value::Array(items) => items.iter_mut().for_each(|s| for_each_schema(s, visit)),
                other => for_each_schema(other, visit),
            }
        }
    }
    for key in ["allOf", "anyOf", "oneOf", "prefixItems"] {
        if let Some(Value::Array(items)) = map.get_mut(key) {
            items.iter_mut().for_each(|s| for_each_schema(s, visit));
        }
    }
    for key in ["properties", "patternProperties", "definitions", "$defs"] {
        if let Some(Value::Object(subs)) = map.get_mut(key) {
            subs.values_mut().for_each(|s| for_each_schema(s, visit));
        }
    }
}

/// Routes typify's references to `chrono` through `anchor_runtime`'s re-export, so a
/// user's crate needs only `anchor-runtime`, `serde` and `serde_json`. The token string
/// spells crate paths as `:: chrono ::`; nothing else produces that sequence (a field or
/// type named `chrono` is never preceded by a leading `::`).
fn rewrite_crate_paths(code: &str) -> String {
    code.replace(":: chrono ::", ":: anchor_runtime :: chrono ::")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn titles_and_foreign_formats_are_stripped_but_properties_named_title_survive() {
        let schema = json!({
            "title": "Root",
            "type": "object",
            "description": "Mine.",
            "properties": {
                "title": { "type": "string", "title": "Inner", "format": "uuid" },
                "day": { "type": "string", "format": "date" },
                "n": { "type": "integer", "format": "int32" },
                "list": { "type": "array", "items": { "title": "Item", "type": "object" } }
            }
        });
        assert_eq!(
            prepare_schema(&schema, "T", false),
            json!({
                "type": "object",
                "description": "Mine.",
                "properties": {
                    "title": { "type": "string" },
                    "day": { "type": "string", "format": "date" },
                    "n": { "type": "integer", "format": "int32" },
                    "list": { "type": "array", "items": { "type": "object" } }
                }
            })
        );
    }

    #[test]
    fn defaulted_properties_leave_required_at_every_level() {
        let schema = json!({
            "type": "object",
            "description": "Mine.",
            "required": ["id", "level", "inner"],
            "properties": {
                "id": { "type": "integer" },
                "level": { "type": "string", "default": "admin" },
                "inner": {
                    "type": "object",
                    "required": ["size"],
                    "properties": { "size": { "type": "integer", "default": 10 } }
                }
            }
        });
        let prepared = prepare_schema(&schema, "T", false);
        assert_eq!(prepared["required"], json!(["id", "inner"]));
        assert!(prepared["properties"]["inner"].get("required").is_none());
        assert_eq!(prepared["properties"]["level"]["default"], "admin");
    }

    #[test]
    fn the_root_struct_is_documented_when_the_schema_is_not() {
        let prepared = prepare_schema(&json!({ "type": "object" }), "SendEmail", false);
        assert_eq!(
            prepared["description"],
            "Parameters of the `SendEmail` task."
        );
    }

    #[test]
    fn crate_paths_go_through_the_runtime() {
        let code =
            "pub at : :: chrono :: DateTime < :: chrono :: offset :: Utc > , pub chrono : i64";
        assert_eq!(
            rewrite_crate_paths(code),
            "pub at : :: anchor_runtime :: chrono :: DateTime < :: anchor_runtime :: chrono :: offset :: Utc > , pub chrono : i64"
        );
    }
}
