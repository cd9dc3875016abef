//! JSON Schema to the schema Gemini accepts.
//!
//! `responseSchema` and function `parameters` take Gemini's subset of the
//! OpenAPI 3.0 schema object, and the API refuses the whole request (400
//! `INVALID_ARGUMENT`, "Unknown name \"additionalProperties\"") for a
//! keyword outside it. Clients write full JSON Schema (OpenAI's strict mode
//! even requires `additionalProperties: false`), so the schema is reduced:
//! keywords Gemini knows are kept, local `$ref`s are inlined, a
//! `["T", "null"]` type becomes `T` with `nullable`, and everything else is
//! dropped. Dropping only loosens the constraint, and Keel validates the
//! answer against the client's own schema afterwards.

use serde_json::{Map, Value};

/// Keywords of Gemini's schema object.
const KEPT: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// How deep `$ref`s are followed (a recursive schema is cut there).
const MAX_DEPTH: usize = 16;

/// `schema` reduced to what Gemini accepts.
pub fn response_schema(schema: &Value) -> Value {
    reduce(schema, schema, 0)
}

fn reduce(node: &Value, root: &Value, depth: usize) -> Value {
    let Value::Object(obj) = node else {
        return node.clone();
    };
    if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
        return match resolve(root, target) {
            Some(t) if depth < MAX_DEPTH => reduce(t, root, depth + 1),
            _ => Value::Object(Map::new()),
        };
    }
    let mut out = Map::new();
    for (key, value) in obj {
        if !KEPT.contains(&key.as_str()) {
            continue;
        }
        let value = match key.as_str() {
            "properties" => match value {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), reduce(v, root, depth + 1)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" => reduce(value, root, depth + 1),
            "anyOf" => match value {
                Value::Array(items) => {
                    Value::Array(items.iter().map(|v| reduce(v, root, depth + 1)).collect())
                }
                other => other.clone(),
            },
            "type" => match value {
                Value::Array(types) => {
                    let mut named = types.iter().filter_map(Value::as_str);
                    let first = named.find(|t| *t != "null");
                    if types.iter().any(|t| t.as_str() == Some("null")) {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                    match first {
                        Some(t) => Value::String(t.to_owned()),
                        None => continue,
                    }
                }
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    // `const` is an enum of one (Gemini's enums are strings).
    if let Some(Value::String(c)) = obj.get("const") {
        out.entry("enum")
            .or_insert_with(|| Value::Array(vec![Value::String(c.clone())]));
    }
    Value::Object(out)
}

/// A local reference (`#/$defs/Name`, `#/definitions/Name`) in `root`.
fn resolve<'a>(root: &'a Value, target: &str) -> Option<&'a Value> {
    let pointer = target.strip_prefix('#')?;
    root.pointer(pointer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// A strict OpenAI schema (with `additionalProperties`, `$schema`,
    /// `$defs` and a nullable type) reduces to Gemini's subset.
    #[test]
    fn strict_schemas_reduce_to_gemini_keywords() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
                "note": {"type": ["string", "null"]},
                "kind": {"const": "person"}
            },
            "required": ["name", "tags", "note", "kind"],
            "$defs": {"tag": {"type": "string", "additionalProperties": false}}
        });
        assert_eq!(
            response_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "note": {"type": "string", "nullable": true},
                    "kind": {"enum": ["person"]}
                },
                "required": ["name", "tags", "note", "kind"]
            })
        );
    }

    /// A recursive schema is cut at the depth limit, not followed forever.
    #[test]
    fn recursive_refs_end() {
        let schema = json!({
            "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node"
        });
        let reduced = response_schema(&schema);
        let mut depth = 0;
        let mut at = &reduced;
        while let Some(next) = at.get("properties").and_then(|p| p.get("next")) {
            depth += 1;
            at = next;
        }
        assert!(depth > 2 && depth <= MAX_DEPTH, "{depth}");
    }
}
