//! The response shapes of objects and lists: the object itself, a
//! `meta.k8s.io` Table (server-side printing), or PartialObjectMetadata.

use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::table;

use super::meta;
use super::negotiate::{IncludeObject, Output};
use super::objects::ListPage;

fn row(
    r: &ResourceType,
    obj: &Value,
    include: IncludeObject,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut row = json!({"cells": table::row_cells(r, obj, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = meta::partial_metadata(obj, "meta.k8s.io/v1"),
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A Table of `objects` with list metadata `list_meta`.
pub fn table(
    r: &ResourceType,
    objects: &[Value],
    list_meta: Value,
    api_version: &str,
    include: IncludeObject,
) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objects.iter().map(|o| row(r, o, include, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": list_meta,
        "columnDefinitions": table::column_definitions(r),
        "rows": rows,
    })
}

/// One object in the requested output.
pub fn object(r: &ResourceType, obj: Value, output: Output, include: IncludeObject) -> Value {
    match output {
        Output::Table(av) => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            table(
                r,
                std::slice::from_ref(&obj),
                json!({"resourceVersion": rv}),
                av,
                include,
            )
        }
        Output::PartialMetadata(av) => meta::partial_metadata(&obj, av),
        Output::Json | Output::Yaml => obj,
    }
}

/// A list page in the requested output.
pub fn list(r: &ResourceType, page: ListPage, output: Output, include: IncludeObject) -> Value {
    let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        list_meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        list_meta["remainingItemCount"] = json!(n);
    }
    match output {
        Output::Table(av) => table(r, &page.items, list_meta, av, include),
        Output::PartialMetadata(av) => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|o| meta::partial_metadata(o, av))
                .collect();
            json!({"kind": "PartialObjectMetadataList", "apiVersion": av, "metadata": list_meta, "items": items})
        }
        Output::Json | Output::Yaml => json!({
            "kind": r.list_kind,
            "apiVersion": r.api_version,
            "metadata": list_meta,
            "items": page.items,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_carry_partial_metadata() {
        let cm = crate::resources::find("", "v1", "configmaps").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n", "resourceVersion": "5"}});
        let t = object(
            cm,
            obj,
            Output::Table("meta.k8s.io/v1"),
            IncludeObject::Metadata,
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "5");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "n");
    }
}
