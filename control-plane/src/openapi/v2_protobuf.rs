//! The protobuf form of `/openapi/v2` (what kubectl asks for to validate
//! `kind: List` files and other objects without a v3 `fieldValidation`
//! check): the served Swagger 2.0 JSON converted into gnostic's
//! `openapi.v2.Document`, as `gnostic.ParseDocument` would read it.

use prost::Message;
use serde_json::{Map, Value};

use super::gnostic::{
    AdditionalProperties, AdditionalPropertiesItem, Any, ApiKeySecurity, BodyParameter,
    Definitions, Document, Info, ItemsItem, NamedAny, NamedPathItem, NamedResponseValue,
    NamedSchema, NamedSecurityDefinitionsItem, NamedStringArray, NonBodyParameter,
    NonBodyParameterKind, Operation, Parameter, ParameterKind, ParametersItem, ParametersItemKind,
    PathItem, PathParameterSubSchema, Paths, Properties, QueryParameterSubSchema, Response,
    ResponseValue, ResponseValueKind, Responses, Schema, SchemaItem, SchemaItemKind,
    SecurityDefinitions, SecurityDefinitionsItem, SecurityDefinitionsKind, SecurityRequirement,
    StringArray, TypeItem,
};

/// The media types a client may ask for the protobuf document with: the
/// spelling kubectl sends, whose `@` Go's `mime.ParseMediaType` rejects in
/// a response, and the one upstream answers both with.
pub const V2_PROTOBUF_MEDIA_TYPES: [&str; 2] = [
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    V2_PROTOBUF_CONTENT_TYPE,
];

/// The `Content-Type` of the protobuf document.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

#[derive(Debug, thiserror::Error)]
pub enum V2ProtobufError {
    #[error("the openapi v2 document is not json")]
    Parse(#[source] serde_json::Error),
}

/// Encodes the Swagger 2.0 document `json` as an `openapi.v2.Document`.
pub fn encode(json: &str) -> Result<Vec<u8>, V2ProtobufError> {
    let value: Value = serde_json::from_str(json).map_err(V2ProtobufError::Parse)?;
    Ok(document(&value).encode_to_vec())
}

fn document(doc: &Value) -> Document {
    Document {
        swagger: string(doc, "swagger"),
        info: doc.get("info").map(|info| Info {
            title: string(info, "title"),
            version: string(info, "version"),
            description: string(info, "description"),
            vendor_extension: vendor_extensions(info),
        }),
        host: string(doc, "host"),
        base_path: string(doc, "basePath"),
        schemes: strings(doc, "schemes"),
        consumes: strings(doc, "consumes"),
        produces: strings(doc, "produces"),
        paths: doc.get("paths").and_then(Value::as_object).map(paths),
        definitions: doc
            .get("definitions")
            .and_then(Value::as_object)
            .map(|defs| Definitions {
                additional_properties: named_schemas(defs),
            }),
        security: doc
            .get("security")
            .and_then(Value::as_array)
            .map(|reqs| reqs.iter().map(security_requirement).collect())
            .unwrap_or_default(),
        security_definitions: doc
            .get("securityDefinitions")
            .and_then(Value::as_object)
            .map(security_definitions),
        vendor_extension: vendor_extensions(doc),
    }
}

fn string(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn boolean(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or_default()
}

fn integer(value: &Value, key: &str) -> i64 {
    value.get(key).and_then(Value::as_i64).unwrap_or_default()
}

fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or_default()
}

/// A free-form value as gnostic keeps it: YAML text.
fn any(value: &Value) -> Any {
    Any {
        yaml: serde_yaml::to_string(value).unwrap_or_default(),
    }
}

/// The `x-` members of an object, in document order.
fn vendor_extensions(value: &Value) -> Vec<NamedAny> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(k, _)| k.starts_with("x-"))
                .map(|(k, v)| NamedAny {
                    name: k.clone(),
                    value: Some(any(v)),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn named_schemas(map: &Map<String, Value>) -> Vec<NamedSchema> {
    map.iter()
        .map(|(name, value)| NamedSchema {
            name: name.clone(),
            value: Some(schema(value)),
        })
        .collect()
}

/// One JSON schema. Keywords Swagger 2.0 lacks (the document has none that
/// matter) are left out, as gnostic would reject them.
fn schema(value: &Value) -> Schema {
    Schema {
        reference: string(value, "$ref"),
        format: string(value, "format"),
        title: string(value, "title"),
        description: string(value, "description"),
        default: value.get("default").map(any),
        multiple_of: number(value, "multipleOf"),
        maximum: number(value, "maximum"),
        exclusive_maximum: boolean(value, "exclusiveMaximum"),
        minimum: number(value, "minimum"),
        exclusive_minimum: boolean(value, "exclusiveMinimum"),
        max_length: integer(value, "maxLength"),
        min_length: integer(value, "minLength"),
        pattern: string(value, "pattern"),
        max_items: integer(value, "maxItems"),
        min_items: integer(value, "minItems"),
        unique_items: boolean(value, "uniqueItems"),
        max_properties: integer(value, "maxProperties"),
        min_properties: integer(value, "minProperties"),
        required: strings(value, "required"),
        r#enum: value
            .get("enum")
            .and_then(Value::as_array)
            .map(|items| items.iter().map(any).collect())
            .unwrap_or_default(),
        additional_properties: value.get("additionalProperties").and_then(|v| match v {
            Value::Bool(b) => Some(AdditionalPropertiesItem {
                oneof: Some(AdditionalProperties::Boolean(*b)),
            }),
            Value::Object(_) => Some(AdditionalPropertiesItem {
                oneof: Some(AdditionalProperties::Schema(Box::new(schema(v)))),
            }),
            _ => None,
        }),
        r#type: match value.get("type") {
            Some(Value::String(t)) => Some(TypeItem {
                value: vec![t.clone()],
            }),
            Some(Value::Array(_)) => Some(TypeItem {
                value: strings(value, "type"),
            }),
            _ => None,
        },
        items: match value.get("items") {
            Some(Value::Array(items)) => Some(ItemsItem {
                schema: items.iter().map(schema).collect(),
            }),
            Some(item @ Value::Object(_)) => Some(ItemsItem {
                schema: vec![schema(item)],
            }),
            _ => None,
        },
        all_of: value
            .get("allOf")
            .and_then(Value::as_array)
            .map(|items| items.iter().map(schema).collect())
            .unwrap_or_default(),
        properties: value
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| Properties {
                additional_properties: named_schemas(props),
            }),
        discriminator: string(value, "discriminator"),
        read_only: boolean(value, "readOnly"),
        example: value.get("example").map(any),
        vendor_extension: vendor_extensions(value),
    }
}

fn paths(map: &Map<String, Value>) -> Paths {
    Paths {
        vendor_extension: Vec::new(),
        path: map
            .iter()
            .map(|(name, item)| NamedPathItem {
                name: name.clone(),
                value: Some(path_item(item)),
            })
            .collect(),
    }
}

fn path_item(item: &Value) -> PathItem {
    let op = |method: &str| item.get(method).map(operation);
    PathItem {
        reference: string(item, "$ref"),
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        options: op("options"),
        head: op("head"),
        patch: op("patch"),
        parameters: parameters(item),
        vendor_extension: vendor_extensions(item),
    }
}

fn operation(op: &Value) -> Operation {
    Operation {
        tags: strings(op, "tags"),
        summary: string(op, "summary"),
        description: string(op, "description"),
        operation_id: string(op, "operationId"),
        produces: strings(op, "produces"),
        consumes: strings(op, "consumes"),
        parameters: parameters(op),
        responses: op
            .get("responses")
            .and_then(Value::as_object)
            .map(responses),
        schemes: strings(op, "schemes"),
        deprecated: boolean(op, "deprecated"),
        vendor_extension: vendor_extensions(op),
    }
}

fn parameters(value: &Value) -> Vec<ParametersItem> {
    value
        .get("parameters")
        .and_then(Value::as_array)
        .map(|params| params.iter().filter_map(parameter).collect())
        .unwrap_or_default()
}

/// A body, query or path parameter (the only kinds the document has).
fn parameter(p: &Value) -> Option<ParametersItem> {
    let kind = match p.get("in").and_then(Value::as_str)? {
        "body" => ParameterKind::BodyParameter(Box::new(BodyParameter {
            description: string(p, "description"),
            name: string(p, "name"),
            r#in: "body".into(),
            required: boolean(p, "required"),
            schema: p.get("schema").map(schema),
            vendor_extension: vendor_extensions(p),
        })),
        "query" => non_body(NonBodyParameterKind::QueryParameterSubSchema(
            QueryParameterSubSchema {
                required: boolean(p, "required"),
                r#in: "query".into(),
                description: string(p, "description"),
                name: string(p, "name"),
                r#type: string(p, "type"),
                format: string(p, "format"),
                unique_items: boolean(p, "uniqueItems"),
                vendor_extension: vendor_extensions(p),
            },
        )),
        "path" => non_body(NonBodyParameterKind::PathParameterSubSchema(
            PathParameterSubSchema {
                required: boolean(p, "required"),
                r#in: "path".into(),
                description: string(p, "description"),
                name: string(p, "name"),
                r#type: string(p, "type"),
                format: string(p, "format"),
                unique_items: boolean(p, "uniqueItems"),
                vendor_extension: vendor_extensions(p),
            },
        )),
        _ => return None,
    };
    Some(ParametersItem {
        oneof: Some(ParametersItemKind::Parameter(Box::new(Parameter {
            oneof: Some(kind),
        }))),
    })
}

fn non_body(kind: NonBodyParameterKind) -> ParameterKind {
    ParameterKind::NonBodyParameter(NonBodyParameter { oneof: Some(kind) })
}

fn responses(map: &Map<String, Value>) -> Responses {
    Responses {
        response_code: map
            .iter()
            .filter(|(code, _)| !code.starts_with("x-"))
            .map(|(code, r)| NamedResponseValue {
                name: code.clone(),
                value: Some(ResponseValue {
                    oneof: Some(ResponseValueKind::Response(Box::new(Response {
                        description: string(r, "description"),
                        schema: r.get("schema").map(|s| SchemaItem {
                            oneof: Some(SchemaItemKind::Schema(schema(s))),
                        }),
                        vendor_extension: vendor_extensions(r),
                    }))),
                }),
            })
            .collect(),
        vendor_extension: Vec::new(),
    }
}

fn security_requirement(req: &Value) -> SecurityRequirement {
    SecurityRequirement {
        additional_properties: req
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(name, scopes)| NamedStringArray {
                        name: name.clone(),
                        value: Some(StringArray {
                            value: scopes
                                .as_array()
                                .map(|s| {
                                    s.iter()
                                        .filter_map(Value::as_str)
                                        .map(str::to_owned)
                                        .collect()
                                })
                                .unwrap_or_default(),
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The API key schemes (the only kind the document declares).
fn security_definitions(map: &Map<String, Value>) -> SecurityDefinitions {
    SecurityDefinitions {
        additional_properties: map
            .iter()
            .filter(|(_, def)| def.get("type").and_then(Value::as_str) == Some("apiKey"))
            .map(|(name, def)| NamedSecurityDefinitionsItem {
                name: name.clone(),
                value: Some(SecurityDefinitionsItem {
                    oneof: Some(SecurityDefinitionsKind::ApiKeySecurity(ApiKeySecurity {
                        r#type: "apiKey".into(),
                        name: string(def, "name"),
                        r#in: string(def, "in"),
                        description: string(def, "description"),
                        vendor_extension: vendor_extensions(def),
                    })),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_keywords_map_to_gnostic_fields() {
        let s = schema(&json!({
            "type": "object",
            "description": "d",
            "required": ["a"],
            "properties": {
                "a": {"type": "array", "items": {"$ref": "#/definitions/x.Y"}},
                "m": {"type": "object", "additionalProperties": {"type": "string"}},
                "n": {"type": "integer", "format": "int32", "minimum": 1, "maxLength": 3},
            },
            "x-kubernetes-list-type": "atomic",
        }));
        assert_eq!(s.r#type.unwrap().value, ["object"]);
        assert_eq!(s.description, "d");
        assert_eq!(s.required, ["a"]);
        let props = s.properties.unwrap().additional_properties;
        let names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "m", "n"]);
        let a = props[0].value.clone().unwrap();
        assert_eq!(a.items.unwrap().schema[0].reference, "#/definitions/x.Y");
        let m = props[1].value.clone().unwrap();
        let Some(AdditionalProperties::Schema(inner)) = m.additional_properties.unwrap().oneof
        else {
            panic!("additionalProperties is not a schema");
        };
        assert_eq!(inner.r#type.unwrap().value, ["string"]);
        let n = props[2].value.clone().unwrap();
        assert_eq!(
            (n.format.as_str(), n.minimum, n.max_length),
            ("int32", 1.0, 3)
        );
        assert_eq!(s.vendor_extension[0].name, "x-kubernetes-list-type");
        assert_eq!(
            s.vendor_extension[0].value.clone().unwrap().yaml.trim(),
            "atomic"
        );
    }

    #[test]
    fn operations_keep_parameters_and_group_version_kind() {
        let item = path_item(&json!({
            "patch": {
                "operationId": "patchCoreV1NamespacedConfigMap",
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true},
                    {"name": "body", "in": "body", "required": true, "schema": {"type": "object"}},
                ],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/a.B"}}},
                "x-kubernetes-group-version-kind": {"group": "", "kind": "ConfigMap", "version": "v1"},
            },
            "parameters": [{"name": "name", "in": "path", "required": true, "type": "string"}],
        }));
        let patch = item.patch.unwrap();
        assert_eq!(patch.parameters.len(), 2);
        let Some(ParametersItemKind::Parameter(param)) = patch.parameters[0].oneof.clone() else {
            panic!("not a parameter: {:?}", patch.parameters[0]);
        };
        let Some(ParameterKind::NonBodyParameter(NonBodyParameter {
            oneof: Some(NonBodyParameterKind::QueryParameterSubSchema(q)),
        })) = param.oneof
        else {
            panic!("not a query parameter: {param:?}");
        };
        assert_eq!(q.name, "fieldValidation");
        let gvk: Value =
            serde_yaml::from_str(&patch.vendor_extension[0].value.clone().unwrap().yaml).unwrap();
        assert_eq!(
            gvk,
            json!({"group": "", "kind": "ConfigMap", "version": "v1"})
        );
        assert_eq!(patch.responses.unwrap().response_code[0].name, "200");
        assert_eq!(item.parameters.len(), 1);
    }

    #[test]
    fn served_document_decodes_with_the_pod_definition() {
        let bytes = super::super::v2_protobuf_bytes().expect("served bytes");
        let doc = Document::decode(bytes).unwrap();
        assert_eq!(doc.swagger, "2.0");
        let pod = doc
            .definitions
            .unwrap()
            .additional_properties
            .into_iter()
            .find(|d| d.name == "io.k8s.api.core.v1.Pod")
            .and_then(|d| d.value)
            .expect("pod definition");
        let gvk = pod
            .vendor_extension
            .iter()
            .find(|e| e.name == "x-kubernetes-group-version-kind")
            .and_then(|e| e.value.clone())
            .expect("group-version-kind extension");
        let gvk: Value = serde_yaml::from_str(&gvk.yaml).unwrap();
        assert_eq!(gvk, json!([{"group": "", "kind": "Pod", "version": "v1"}]));
        let spec = pod
            .properties
            .unwrap()
            .additional_properties
            .into_iter()
            .find(|p| p.name == "spec")
            .and_then(|p| p.value)
            .unwrap();
        assert_eq!(spec.reference, "#/definitions/io.k8s.api.core.v1.PodSpec");
        assert!(!doc.paths.unwrap().path.is_empty());
    }
}
