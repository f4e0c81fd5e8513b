//! Tables of custom resources, from a CRD version's
//! `additionalPrinterColumns` (apiextensions-apiserver `tableconvertor`):
//! the `Name` column, then one column per printer column, its cell found
//! with a simple JSONPath.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::columns;
use super::format::{human_duration, s};

/// The printer column upstream uses when a CRD version declares none.
fn default_printer_columns() -> Vec<Value> {
    vec![json!({
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": columns::doc::<ObjectMeta>("creationTimestamp"),
    })]
}

fn or_default(printer_columns: &[Value]) -> Vec<Value> {
    if printer_columns.is_empty() {
        default_printer_columns()
    } else {
        printer_columns.to_vec()
    }
}

/// The column definitions of a custom resource's table, given the
/// `additionalPrinterColumns` of the served CRD version.
pub fn custom_resource_columns(printer_columns: &[Value]) -> Vec<Value> {
    let mut out = vec![columns::name()];
    for col in or_default(printer_columns) {
        let path = s(&col, "/jsonPath");
        let description = match s(&col, "/description") {
            "" => format!("Custom resource definition column (in JSONPath format): {path}"),
            d => d.to_string(),
        };
        out.push(columns::column(
            s(&col, "/name"),
            s(&col, "/type"),
            s(&col, "/format"),
            col.get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            description,
        ));
    }
    out
}

/// The cells of one custom resource, matching `custom_resource_columns`.
pub fn custom_resource_cells(
    printer_columns: &[Value],
    object: &Value,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let mut out = vec![json!(s(object, "/metadata/name"))];
    for col in or_default(printer_columns) {
        let value = json_path(object, s(&col, "/jsonPath"));
        out.push(match value {
            None | Some(Value::Null) => Value::Null,
            Some(v) => cell(s(&col, "/type"), v, now),
        });
    }
    out
}

/// `cellForJSONValue`, with `string` columns printed as JSONPath prints.
fn cell(column_type: &str, value: &Value, now: DateTime<Utc>) -> Value {
    match column_type {
        "string" => match value {
            Value::String(text) => json!(text),
            other => json!(other.to_string()),
        },
        "integer" => match value {
            Value::Number(n) => n
                .as_i64()
                .map(|i| json!(i))
                // Go converts a float64 to int64 by truncation.
                .or_else(|| n.as_f64().map(|f| json!(f.trunc())))
                .unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "number" => match value {
            Value::Number(_) => value.clone(),
            _ => Value::Null,
        },
        "boolean" => match value {
            Value::Bool(_) => value.clone(),
            _ => Value::Null,
        },
        "date" => match value {
            // An empty string parses as the zero time (`ConvertToHumanReadableDateType`).
            Value::String(text) if text.is_empty() => json!("<unknown>"),
            Value::String(text) => match DateTime::parse_from_rfc3339(text) {
                Ok(t) => json!(human_duration(now - t.with_timezone(&Utc))),
                Err(_) => json!("<invalid>"),
            },
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, escaped dots
/// (`.labels.app\.kubernetes\.io/name`), `[n]`, `[*]` and
/// `[?(@.field=="value")]`. Returns the first match.
pub fn json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let steps = parse_steps(path.strip_prefix('$').unwrap_or(path))?;
    first_match(object, &steps)
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn parse_steps(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut field = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    field.push(chars[i]);
                    i += 1;
                }
                if !field.is_empty() {
                    steps.push(Step::Field(field));
                }
            }
            '[' => {
                let end = chars[i..].iter().position(|c| *c == ']')? + i;
                let inner: String = chars[i + 1..end].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = end + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

fn parse_bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Some(Step::Index(n));
    }
    if let Some(quoted) = inner
        .strip_prefix('\'')
        .and_then(|q| q.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|q| q.strip_suffix('"')))
    {
        return Some(Step::Field(quoted.to_string()));
    }
    let filter = inner.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (left, right) = filter.split_once("==")?;
    let field = left.trim().strip_prefix("@.")?.to_string();
    let value = right
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_string();
    Some(Step::Filter(field, value))
}

fn first_match<'a>(value: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(value);
    };
    match step {
        Step::Field(name) => first_match(value.get(name)?, rest),
        Step::Index(n) => first_match(value.get(*n)?, rest),
        Step::All => value
            .as_array()?
            .iter()
            .find_map(|item| first_match(item, rest)),
        Step::Filter(field, expected) => value
            .as_array()?
            .iter()
            .filter(|item| match item.get(field) {
                Some(Value::String(v)) => v == expected,
                Some(other) => serde_json::from_str::<Value>(expected).ok().as_ref() == Some(other),
                None => false,
            })
            .find_map(|item| first_match(item, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn printer_columns_become_table_columns_and_cells() {
        let printer = vec![
            json!({"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}),
            json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "priority": 1, "description": "how many"}),
            json!({"name": "App", "type": "string", "jsonPath": ".metadata.labels.app\\.kubernetes\\.io/name"}),
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
            json!({"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"}),
        ];
        let cols = custom_resource_columns(&printer);
        assert_eq!(cols.len(), 6);
        assert_eq!(cols[0]["name"], "Name");
        assert_eq!(
            cols[1]["description"],
            "Custom resource definition column (in JSONPath format): .status.conditions[?(@.type==\"Ready\")].status"
        );
        assert_eq!(cols[2]["priority"], 1);
        assert_eq!(cols[2]["description"], "how many");
        let object = json!({
            "metadata": {"name": "foo", "creationTimestamp": "2024-01-01T00:58:00Z",
                         "labels": {"app.kubernetes.io/name": "demo"}},
            "spec": {"replicas": 3},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}
        });
        assert_eq!(
            custom_resource_cells(&printer, &object, now()),
            vec![
                json!("foo"),
                json!("True"),
                json!(3),
                json!("demo"),
                json!("2m"),
                Value::Null
            ]
        );
    }

    #[test]
    fn crd_without_printer_columns_gets_age() {
        let cols = custom_resource_columns(&[]);
        assert_eq!(cols[1]["name"], "Age");
        assert_eq!(cols[1]["type"], "date");
        let object =
            json!({"metadata": {"name": "x", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        assert_eq!(
            custom_resource_cells(&[], &object, now()),
            vec![json!("x"), json!("60m")]
        );
    }

    #[test]
    fn json_path_indexes_and_wildcards() {
        let v = json!({"a": [{"b": 1}, {"b": 2}], "c": {"d": "e"}});
        assert_eq!(json_path(&v, ".a[1].b"), Some(&json!(2)));
        assert_eq!(json_path(&v, "{.a[*].b}"), Some(&json!(1)));
        assert_eq!(json_path(&v, ".c['d']"), Some(&json!("e")));
        assert_eq!(json_path(&v, ".x.y"), None);
    }
}
