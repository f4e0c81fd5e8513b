//! One step of a field path (structured-merge-diff's `PathElement`): a
//! field name, the key of an associative-list item, the value of a set
//! item, or a list index; its `fieldsV1` key form (`f:`, `k:`, `v:`, `i:`)
//! and its form in conflict messages (`.spec`, `[name="x"]`).

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// A path element. Ordered as upstream: field names, then keys, then
/// values, then indexes.
#[derive(Debug, Clone)]
pub enum PathElement {
    Field(String),
    /// The key fields of an associative-list item, sorted by name.
    Key(Vec<(String, Value)>),
    Value(Value),
    Index(usize),
}

/// A path from the object's root.
pub type Path = Vec<PathElement>;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("unknown path element prefix in {0:?}")]
    Prefix(String),
    #[error("invalid JSON in path element {element:?}")]
    Json {
        element: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("path element {0:?} is not a valid key")]
    Key(String),
}

impl PathElement {
    /// The `fieldsV1` key: `f:name`, `k:{"name":"x"}`, `v:"x"`, `i:0`.
    pub fn to_key(&self) -> String {
        match self {
            Self::Field(name) => format!("f:{name}"),
            Self::Key(fields) => {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v))
                    .collect();
                format!("k:{{{}}}", body.join(","))
            }
            Self::Value(v) => format!("v:{v}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `fieldsV1` key.
    pub fn from_key(s: &str) -> Result<Self, PathError> {
        let json = |body: &str| {
            serde_json::from_str::<Value>(body).map_err(|source| PathError::Json {
                element: s.to_string(),
                source,
            })
        };
        if let Some(name) = s.strip_prefix("f:") {
            return Ok(Self::Field(name.to_string()));
        }
        if let Some(body) = s.strip_prefix("k:") {
            let Value::Object(map) = json(body)? else {
                return Err(PathError::Key(s.to_string()));
            };
            let mut fields: Vec<(String, Value)> = map.into_iter().collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            return Ok(Self::Key(fields));
        }
        if let Some(body) = s.strip_prefix("v:") {
            return Ok(Self::Value(json(body)?));
        }
        if let Some(i) = s.strip_prefix("i:") {
            return i
                .parse()
                .map(Self::Index)
                .map_err(|_| PathError::Key(s.to_string()));
        }
        Err(PathError::Prefix(s.to_string()))
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Field(_) => 0,
            Self::Key(_) => 1,
            Self::Value(_) => 2,
            Self::Index(_) => 3,
        }
    }
}

/// The path as conflict messages print it: `.spec.containers[name="app"].image`.
pub fn display(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(name) => write!(f, ".{name}"),
            Self::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            Self::Value(v) => write!(f, "[={v}]"),
            Self::Index(i) => write!(f, "[{i}]"),
        }
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Field(a), Self::Field(b)) => a.cmp(b),
            (Self::Key(a), Self::Key(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    let c = ka.cmp(kb).then_with(|| value_cmp(va, vb));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Self::Value(a), Self::Value(b)) => value_cmp(a, b),
            (Self::Index(a), Self::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

/// Upstream's value order: numbers, strings, booleans, lists, maps, null.
pub fn value_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = value_cmp(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y) {
                let c = ka.cmp(kb).then_with(|| value_cmp(va, vb));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_roundtrip_in_fields_v1_form() {
        let k = PathElement::Key(vec![
            ("containerPort".into(), json!(80)),
            ("protocol".into(), json!("TCP")),
        ]);
        assert_eq!(k.to_key(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        assert_eq!(PathElement::from_key(&k.to_key()).unwrap(), k);
        for s in ["f:spec", r#"v:"a""#, "i:3"] {
            assert_eq!(PathElement::from_key(s).unwrap().to_key(), s);
        }
        assert!(PathElement::from_key("x:1").is_err());
        assert!(PathElement::from_key("k:[1]").is_err());
    }

    #[test]
    fn paths_print_like_upstream_conflicts() {
        let p = vec![
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(vec![("name".into(), json!("app"))]),
            PathElement::Field("image".into()),
        ];
        assert_eq!(display(&p), r#".spec.containers[name="app"].image"#);
        assert_eq!(
            display(&[PathElement::Value(json!("x")), PathElement::Index(2)]),
            r#"[="x"][2]"#
        );
    }

    #[test]
    fn fields_sort_before_keys_and_numbers_numerically() {
        let f = PathElement::Field("z".into());
        let k80 = PathElement::Key(vec![("port".into(), json!(80))]);
        let k443 = PathElement::Key(vec![("port".into(), json!(443))]);
        assert!(f < k80);
        assert!(k80 < k443);
        assert!(PathElement::Value(json!(1)) < PathElement::Value(json!("a")));
    }
}
