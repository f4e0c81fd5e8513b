//! Label and field selectors of list and watch requests: parsing with the
//! upstream grammar and error messages (`k8s.io/apimachinery/pkg/labels`,
//! `.../fields`), and matching against stored objects. No I/O.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::registry::meta::{is_qualified_name, is_valid_label_value};
use crate::resources::ResourceType;

/// A parsed label selector (`app=web,tier!=db,env in (a,b),!legacy`).
/// The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted, as upstream keeps them in a set.
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// A parsed field selector (`metadata.name=x,spec.nodeName!=n`).
/// The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field as the client named it.
    pub field: String,
    pub value: String,
    pub negated: bool,
}

// ---------------------------------------------------------------- labels

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    Error,
    Identifier,
    In,
    NotIn,
    Comma,
    OpenPar,
    ClosedPar,
    DoesNotExist,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Vec<(Token, String)> {
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        if is_special(chars[i]) {
            let mut buf = String::new();
            let mut best: Option<(Token, String)> = None;
            let mut j = i;
            while j < chars.len() && is_special(chars[j]) {
                buf.push(chars[j]);
                let tok = match buf.as_str() {
                    ")" => Some(Token::ClosedPar),
                    "," => Some(Token::Comma),
                    "!" => Some(Token::DoesNotExist),
                    "!=" => Some(Token::NotEquals),
                    "(" => Some(Token::OpenPar),
                    "=" => Some(Token::Equals),
                    "==" => Some(Token::DoubleEquals),
                    ">" => Some(Token::GreaterThan),
                    "<" => Some(Token::LessThan),
                    _ => None,
                };
                match tok {
                    Some(t) => best = Some((t, buf.clone())),
                    None if best.is_some() => break,
                    None => {}
                }
                j += 1;
            }
            match best {
                Some((t, lit)) => {
                    i += lit.chars().count();
                    out.push((t, lit));
                }
                None => {
                    out.push((
                        Token::Error,
                        format!("error expected: keyword found '{buf}'"),
                    ));
                    return out;
                }
            }
            continue;
        }
        let mut buf = String::new();
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            buf.push(chars[i]);
            i += 1;
        }
        let tok = match buf.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier,
        };
        out.push((tok, buf));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn lookahead(&self, ctx: Context) -> (Token, String) {
        let (mut tok, lit) = self
            .items
            .get(self.pos)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        if ctx == Context::Values && matches!(tok, Token::In | Token::NotIn) {
            tok = Token::Identifier;
        }
        (tok, lit)
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let r = self.lookahead(ctx);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let key = lit;
        let key_errs = is_qualified_name(&key);
        if !key_errs.is_empty() {
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                crate::registry::field::go_quote(&key),
                key_errs.join("; ")
            ));
        }
        let (next, _) = self.lookahead(Context::Values);
        if matches!(next, Token::End | Token::Comma) || op.is_some() {
            // `!a=b` stops after `!a`; the caller then rejects the `=`.
            return Ok(Requirement {
                key,
                operator: op.unwrap_or(Operator::Exists),
                values: Vec::new(),
            });
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, operator, values)
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Context::Values);
                if t != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut s = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    s.insert(lit);
                    let (t2, l2) = self.lookahead(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        s.insert(String::new());
                    }
                    let (t2, _) = self.lookahead(Context::Values);
                    if t2 == Token::ClosedPar {
                        s.insert(String::new());
                        return Ok(s);
                    }
                    if t2 == Token::Comma {
                        self.consume(Context::Values);
                        s.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if matches!(tok, Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            return Ok(BTreeSet::from([lit]));
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

/// Upstream `NewRequirement` checks on the values.
fn new_requirement(
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
) -> Result<Requirement, String> {
    use crate::registry::field::{BadValue, go_quote};
    let values: Vec<String> = values.into_iter().collect();
    let list = || BadValue::StrList(values.clone());
    let mut errs: Vec<String> = Vec::new();
    let invalid = |path: String, v: BadValue, msg: &str| {
        let rendered = match v {
            BadValue::Str(s) => go_quote(&s),
            BadValue::StrList(l) => format!(
                "[]string{{{}}}",
                l.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(", ")
            ),
            other => format!("{other:?}"),
        };
        format!("{path}: Invalid value: {rendered}: {msg}")
    };
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => errs.push(invalid(
            "values".into(),
            list(),
            "for 'in', 'notin' operators, values set can't be empty",
        )),
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
            errs.push(invalid(
                "values".into(),
                list(),
                "exact-match compatibility requires one single value",
            ))
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errs.push(invalid(
                    "values".into(),
                    list(),
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(invalid(
                        format!("values[{i}]"),
                        BadValue::Str(v.clone()),
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let msgs = is_valid_label_value(v);
        if !msgs.is_empty() {
            errs.push(invalid(
                format!("values[{i}][{key}]"),
                BadValue::Str(v.clone()),
                &msgs.join("; "),
            ));
        }
    }
    match errs.len() {
        0 => Ok(Requirement {
            key,
            operator,
            values,
        }),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

/// Parses a `labelSelector` query parameter; the error is the message of a 400.
pub fn parse_label_selector(s: &str) -> Result<LabelSelector, String> {
    let mut parser = Parser {
        items: lex(s),
        pos: 0,
    };
    let mut requirements = parser.parse()?;
    requirements.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(LabelSelector { requirements })
}

impl LabelSelector {
    /// A selector that requires every label of a `matchLabels`-style map.
    pub fn from_match_labels(labels: &std::collections::BTreeMap<String, String>) -> Self {
        LabelSelector {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    operator: Operator::Equals,
                    values: vec![v.clone()],
                })
                .collect(),
        }
    }

    /// A selector from a `metav1.LabelSelector` JSON object (`matchLabels`
    /// and `matchExpressions`); `None` when it is malformed.
    pub fn from_json(selector: &Value) -> Option<Self> {
        let mut requirements = Vec::new();
        if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                requirements.push(Requirement {
                    key: k.clone(),
                    operator: Operator::Equals,
                    values: vec![v.as_str()?.to_string()],
                });
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key")?.as_str()?.to_string();
                let mut values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                values.sort();
                let operator = match e.get("operator")?.as_str()? {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    _ => return None,
                };
                requirements.push(Requirement {
                    key,
                    operator,
                    values,
                });
            }
        }
        Some(LabelSelector { requirements })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The parsed requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the object's `metadata.labels` match.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.matches_labels(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Whether a set of labels matches.
    pub fn matches_labels<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches(get(&r.key)))
    }
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(v) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(bound) = self.values.first().and_then(|b| b.parse::<i64>().ok()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.operator {
                Operator::Equals => format!("{}={}", r.key, r.values.join("")),
                Operator::DoubleEquals => format!("{}=={}", r.key, r.values.join("")),
                Operator::NotEquals => format!("{}!={}", r.key, r.values.join("")),
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
                Operator::GreaterThan => format!("{}>{}", r.key, r.values.join("")),
                Operator::LessThan => format!("{}<{}", r.key, r.values.join("")),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

// ---------------------------------------------------------------- fields

/// Splits on commas not escaped by a backslash.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    terms.push(cur);
    terms
}

fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', '=', ',']) {
        return Ok(s.to_string());
    }
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            match c {
                '\\' | '=' | ',' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ',' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            _ => out.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// The fields a resource supports in field selectors, besides
/// `metadata.name` and (for namespaced types) `metadata.namespace`.
pub fn supported_fields(resource: &ResourceType) -> &'static [&'static str] {
    match (resource.group, resource.plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
        _ => &[],
    }
}

/// Parses a `fieldSelector` for a resource; fields the resource does not
/// support are an error (upstream: `field label not supported: x`).
pub fn parse_field_selector(resource: &ResourceType, s: &str) -> Result<FieldSelector, String> {
    let mut terms = Vec::new();
    for part in split_terms(s) {
        if part.is_empty() {
            continue;
        }
        let Some((lhs, op, rhs)) = split_term(&part) else {
            return Err(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            ));
        };
        let value = unescape_value(rhs)?;
        let supported = lhs == "metadata.name"
            || (resource.namespaced && lhs == "metadata.namespace")
            || supported_fields(resource).contains(&lhs);
        if !supported {
            return Err(format!("field label not supported: {lhs}"));
        }
        terms.push(FieldTerm {
            field: lhs.to_string(),
            value,
            negated: op == "!=",
        });
    }
    Ok(FieldSelector { terms })
}

/// The alternative spelling of an event field: core/v1 names on an
/// events.k8s.io/v1 object and back, so a selector matches either form.
fn event_field_alias(field: &str) -> Option<String> {
    if let Some(rest) = field.strip_prefix("involvedObject.") {
        return Some(format!("regarding.{rest}"));
    }
    if let Some(rest) = field.strip_prefix("regarding.") {
        return Some(format!("involvedObject.{rest}"));
    }
    match field {
        "reportingComponent" => Some("reportingController".into()),
        "reportingController" => Some("reportingComponent".into()),
        "source" => Some("deprecatedSource.component".into()),
        _ => None,
    }
}

/// The selectable value of a field on an object, as upstream's
/// `*ToSelectableFields` renders it; a missing field is "".
pub fn field_value(object: &Value, field: &str) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut path = field.to_string();
    if kind == "Event" {
        let is_new = api_version == "events.k8s.io/v1";
        let is_core_name = field.starts_with("involvedObject.")
            || field == "reportingComponent"
            || field == "source";
        if is_new == is_core_name
            && let Some(alias) = event_field_alias(field)
        {
            path = alias;
        }
        if path == "source" {
            path = "source.component".into();
        }
    }
    match field {
        "spec.hostNetwork" | "spec.unschedulable" => {
            let v = lookup(object, &path);
            return v.and_then(Value::as_bool).unwrap_or(false).to_string();
        }
        "status.replicas" | "status.successful" => {
            let v = lookup(object, &path);
            return v.and_then(Value::as_i64).unwrap_or(0).to_string();
        }
        _ => {}
    }
    match lookup(object, &path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = object;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

impl FieldSelector {
    /// Whether the selector has no term (matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The parsed terms.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// The value a term requires for a field (`metadata.name=x` gives x),
    /// for index lookups such as a single-name get.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }

    /// Whether an object of this name and namespace matches, when every
    /// term is on `metadata.name` or `metadata.namespace` (None otherwise):
    /// a watch can then skip an event without decoding its object.
    pub fn matches_name(&self, namespace: Option<&str>, name: &str) -> Option<bool> {
        let mut all = true;
        for t in &self.terms {
            let v = match t.field.as_str() {
                "metadata.name" => name,
                "metadata.namespace" => namespace.unwrap_or(""),
                _ => return None,
            };
            all &= (v == t.value) != t.negated;
        }
        Some(all)
    }

    /// Whether the object's fields match.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|t| {
            let v = field_value(object, &t.field);
            (v == t.value) != t.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::find;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn parses_every_operator() {
        let s = parse_label_selector("a=b, c==d,e!=f,g in (x,y),h notin (z),i,!j,k>1,l<5").unwrap();
        assert_eq!(s.requirements().len(), 9);
        let o = obj(
            json!({"a": "b", "c": "d", "e": "g", "g": "y", "h": "q", "i": "", "k": "2", "l": "4"}),
        );
        assert!(s.matches(&o));
        let o2 = obj(json!({"a": "b", "c": "d", "g": "y", "i": "", "j": "x", "k": "2", "l": "4"}));
        assert!(!s.matches(&o2));
    }

    #[test]
    fn not_equals_matches_missing_labels() {
        let s = parse_label_selector("tier!=db").unwrap();
        assert!(s.matches(&obj(json!({}))));
        assert!(s.matches(&json!({"metadata": {}})));
        assert!(!s.matches(&obj(json!({"tier": "db"}))));
        let s = parse_label_selector("env notin (prod)").unwrap();
        assert!(s.matches(&obj(json!({}))));
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = parse_label_selector("  ").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&json!({})));
    }

    #[test]
    fn in_and_empty_values() {
        let s = parse_label_selector("a in (x, ,y)").unwrap();
        assert_eq!(s.requirements()[0].values, vec!["", "x", "y"]);
        let s = parse_label_selector("a=").unwrap();
        assert!(s.matches(&obj(json!({"a": ""}))));
        assert!(!s.matches(&obj(json!({}))));
        let s = parse_label_selector("in in (in)").unwrap();
        assert!(s.matches(&obj(json!({"in": "in"}))));
    }

    #[test]
    fn syntax_errors_have_upstream_messages() {
        assert_eq!(
            parse_label_selector("a=b,").unwrap_err(),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            parse_label_selector("a b").unwrap_err(),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            parse_label_selector("a in x").unwrap_err(),
            "unable to parse requirement: found 'x' expected: '('"
        );
        assert_eq!(
            parse_label_selector("a in (x").unwrap_err(),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            parse_label_selector("!a=b").unwrap_err(),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_label_selector(",a").unwrap_err(),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            parse_label_selector("a=b c").unwrap_err(),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_label_selector("a>x").unwrap_err(),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        let e = parse_label_selector("a=b$").unwrap_err();
        assert!(
            e.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"b$\": a valid label must be"),
            "{e}"
        );
        let e = parse_label_selector("-a=b").unwrap_err();
        assert!(
            e.starts_with(
                "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist"
            ),
            "{e}"
        );
    }

    #[test]
    fn match_labels_json() {
        let s = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]})).unwrap();
        assert!(s.matches(&obj(json!({"app": "web", "tier": "fe"}))));
        assert!(!s.matches(&obj(json!({"app": "web"}))));
        assert_eq!(s.to_string(), "app=web,tier in (fe)");
    }

    #[test]
    fn field_selectors_on_pods() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "d"}, "spec": {"restartPolicy": "Always"}, "status": {"phase": "Pending"}});
        let s = parse_field_selector(pods, "spec.nodeName=").unwrap();
        assert!(s.matches(&pod));
        let s = parse_field_selector(pods, "spec.nodeName=n1").unwrap();
        assert!(!s.matches(&pod));
        let s = parse_field_selector(
            pods,
            "metadata.name==p,status.phase!=Running,spec.hostNetwork=false",
        )
        .unwrap();
        assert!(s.matches(&pod));
        assert_eq!(s.required_value("metadata.name"), Some("p"));
        assert_eq!(
            parse_field_selector(pods, "spec.foo=x").unwrap_err(),
            "field label not supported: spec.foo"
        );
        assert_eq!(
            parse_field_selector(pods, "nonsense").unwrap_err(),
            "invalid selector: 'nonsense'; can't understand 'nonsense'"
        );
    }

    #[test]
    fn field_selectors_per_resource() {
        let nodes = find("", "v1", "nodes").unwrap();
        assert!(parse_field_selector(nodes, "metadata.namespace=x").is_err());
        let s = parse_field_selector(nodes, "spec.unschedulable=false").unwrap();
        assert!(s.matches(&json!({"metadata": {"name": "n"}, "spec": {}})));
        let secrets = find("", "v1", "secrets").unwrap();
        let s = parse_field_selector(secrets, "type=Opaque").unwrap();
        assert!(s.matches(&json!({"type": "Opaque"})));
        let rs = find("apps", "v1", "replicasets").unwrap();
        let s = parse_field_selector(rs, "status.replicas=0").unwrap();
        assert!(s.matches(&json!({"status": {}})));
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(parse_field_selector(cm, "data=x").is_err());
    }

    #[test]
    fn event_selectors_match_both_versions() {
        let core = find("", "v1", "events").unwrap();
        let s = parse_field_selector(core, "involvedObject.name=web,source=kubelet").unwrap();
        let stored = json!({"kind": "Event", "apiVersion": "v1", "involvedObject": {"name": "web"}, "source": {"component": "kubelet"}});
        assert!(s.matches(&stored));
        let newer = json!({"kind": "Event", "apiVersion": "events.k8s.io/v1", "regarding": {"name": "web"}, "deprecatedSource": {"component": "kubelet"}});
        assert!(s.matches(&newer));
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        let s = parse_field_selector(ev, "regarding.name=web").unwrap();
        assert!(s.matches(&stored));
        assert!(s.matches(&newer));
    }

    #[test]
    fn escaped_field_values() {
        let cm = find("", "v1", "configmaps").unwrap();
        let s = parse_field_selector(cm, "metadata.name=a\\,b").unwrap();
        assert_eq!(s.terms()[0].value, "a,b");
        assert!(parse_field_selector(cm, "metadata.name=a\\x").is_err());
    }
}
