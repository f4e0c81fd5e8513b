//! Watch: the initial state (synthetic ADDED events) when asked, then the
//! watch cache's events after a resourceVersion, filtered by selectors, as a
//! stream of `{"type":..,"object":..}` JSON lines; BOOKMARKs, timeouts, and
//! a 410 ERROR event when the resourceVersion is too old.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::resources::ResourceType;
use crate::storage::{Event, Revision, StoreError};

use super::Api;
use super::meta;
use super::negotiate::{IncludeObject, Output};
use super::objects::{Filter, decode, decode_at, decode_labels_at, decode_metadata_at};
use super::raw_json;
use super::render;
use super::status::ApiError;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// A parsed watch request.
pub struct WatchRequest {
    pub resource: &'static ResourceType,
    pub namespace: Option<String>,
    /// A single object, from the legacy `/watch/.../{name}` path.
    pub name: Option<String>,
    pub filter: Filter,
    pub resource_version: Option<String>,
    pub allow_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub timeout: Option<Duration>,
    pub output: Output,
    pub include: IncludeObject,
}

struct Encoder {
    resource: &'static ResourceType,
    output: Output,
    include: IncludeObject,
}

impl Encoder {
    fn event(&self, kind: &str, obj: Value) -> Bytes {
        let object = match self.output {
            Output::Table(_) | Output::PartialMetadata(_) => {
                render::object(self.resource, obj, self.output, self.include)
            }
            Output::Json | Output::Yaml => obj,
        };
        line(kind, &object)
    }

    fn bookmark(&self, rev: Revision, initial_events_end: bool) -> Bytes {
        let (kind, api_version) = match self.output {
            Output::PartialMetadata(av) => ("PartialObjectMetadata", av),
            _ => (self.resource.kind, self.resource.api_version),
        };
        let mut metadata = json!({"resourceVersion": rev.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}),
        )
    }
}

/// `{"type":KIND,"object":OBJECT}` and a newline. The type comes first, as
/// kube-apiserver writes it: clients decoding the event as an adjacently
/// tagged enum (kube-rs's `WatchEvent`) then read the object straight from
/// the line instead of buffering it until the tag is known.
fn line(kind: &str, object: &impl serde::Serialize) -> Bytes {
    line_with(kind, |out| {
        let _ = serde_json::to_writer(out, object);
    })
}

fn line_with(kind: &str, write_object: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"type\":");
    let _ = serde_json::to_writer(&mut out, kind);
    out.extend_from_slice(b",\"object\":");
    write_object(&mut out);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn error_line(err: &ApiError) -> Bytes {
    line("ERROR", &err.status())
}

/// A store event's type, the stored object it carries and its revision,
/// for a watch that sees both sides of it.
fn event_parts(ev: &Event) -> (&'static str, &[u8], Revision) {
    match ev {
        Event::Put { kv, prev } => {
            let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
            (kind, &kv.value, kv.mod_revision)
        }
        Event::Delete { prev, revision } => ("DELETED", &prev.value, *revision),
    }
}

/// What a watch sends for a store event: the event's type and the state it
/// carries, already decoded when matching it needed the whole object.
struct Selected<'a> {
    kind: &'static str,
    stored: &'a [u8],
    revision: Revision,
    decoded: Option<Value>,
}

/// The event a watch sends for a store event, after its selectors, if any.
fn select<'a>(
    r: &ResourceType,
    filter: &Filter,
    ev: &'a Event,
) -> Result<Option<Selected<'a>>, ApiError> {
    match filter.matches_key(r, ev.key()) {
        Some(false) => return Ok(None),
        // The match does not change with the object: every event is sent.
        Some(true) => {
            let (kind, stored, revision) = event_parts(ev);
            return Ok(Some(Selected {
                kind,
                stored,
                revision,
                decoded: None,
            }));
        }
        None => {}
    }
    // Selectors that read the object. A label selector reads only the
    // labels: each side of the event is matched on its labels alone and
    // only the object sent is decoded in full (the Job controller watches
    // every pod with a label selector). Field selectors may read any field.
    let check = |value: &[u8], revision| -> Result<(bool, Option<Value>), ApiError> {
        if filter.reads_only_labels() {
            Ok((filter.matches(&decode_labels_at(r, value, revision)?), None))
        } else {
            let obj = decode_at(r, value, revision)?;
            Ok((filter.matches(&obj), Some(obj)))
        }
    };
    let (kind, decoded, stored, revision) = match ev {
        Event::Put { kv, prev } => {
            let (new_match, decoded) = check(&kv.value, kv.mod_revision)?;
            let old_match = match prev {
                Some(p) => Some(check(&p.value, p.mod_revision)?.0),
                None => None,
            };
            let kind = match (new_match, old_match) {
                (true, Some(true)) => "MODIFIED",
                (true, _) => "ADDED",
                (false, Some(true)) => "DELETED",
                (false, _) => return Ok(None),
            };
            (kind, decoded, &kv.value, kv.mod_revision)
        }
        Event::Delete { prev, revision } => {
            let (matched, decoded) = check(&prev.value, *revision)?;
            if !matched {
                return Ok(None);
            }
            ("DELETED", decoded, &prev.value, *revision)
        }
    };
    Ok(Some(Selected {
        kind,
        stored,
        revision,
        decoded,
    }))
}

/// The line a watch sends for a store event, if any. An object not decoded
/// for its selectors is written straight from the stored bytes when the
/// output and the resource's conversion allow it (`raw_json`); otherwise
/// only its metadata is decoded for a PartialObjectMetadata watch.
fn event_line(filter: &Filter, enc: &Encoder, ev: &Event) -> Result<Option<Bytes>, ApiError> {
    let r = enc.resource;
    let Some(sel) = select(r, filter, ev)? else {
        return Ok(None);
    };
    let object = match sel.decoded {
        Some(obj) => obj,
        None => {
            let raw = match enc.output {
                Output::Json | Output::Yaml => raw_json::object_at(r, sel.stored, sel.revision),
                Output::PartialMetadata(av) => {
                    raw_json::partial_metadata_at(r, av, sel.stored, sel.revision)
                }
                Output::Table(_) => None,
            };
            if let Some(raw) = raw {
                return Ok(Some(line_with(sel.kind, |out| out.extend_from_slice(&raw))));
            }
            match enc.output {
                Output::PartialMetadata(_) => decode_metadata_at(r, sel.stored, sel.revision)?,
                _ => decode_at(r, sel.stored, sel.revision)?,
            }
        }
    };
    Ok(Some(enc.event(sel.kind, object)))
}

impl Api {
    /// Starts a watch; the receiver yields the response body's chunks.
    pub async fn watch(
        self: &Arc<Self>,
        req: WatchRequest,
    ) -> Result<mpsc::Receiver<Bytes>, ApiError> {
        let r = req.resource;
        let prefix = meta::prefix(r, req.namespace.as_deref());
        let only_key = req
            .name
            .as_deref()
            .map(|n| meta::key(r, req.namespace.as_deref(), n));
        let rv = req
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "0");
        let start: Option<Revision> = rv
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
            })
            .transpose()?;
        let send_initial = req.send_initial_events.unwrap_or(start.is_none());
        let (initial, start) = if send_initial {
            let list = self.cache.list(&prefix).await?;
            (list.items, list.revision)
        } else {
            let start = match start {
                Some(s) => s,
                None => self.cache.revision().await?,
            };
            (Vec::new(), start)
        };
        let (tx, rx) = mpsc::channel::<Bytes>(128);
        let api = Arc::clone(self);
        let enc = Encoder {
            resource: r,
            output: req.output,
            include: req.include,
        };
        tokio::spawn(async move {
            for kv in initial
                .iter()
                .filter(|kv| only_key.as_deref().is_none_or(|k| kv.key == k))
            {
                let Ok(obj) = decode(r, kv) else { continue };
                if req.filter.matches(&obj) && tx.send(enc.event("ADDED", obj)).await.is_err() {
                    return;
                }
            }
            if send_initial
                && req.send_initial_events == Some(true)
                && req.allow_bookmarks
                && tx.send(enc.bookmark(start, true)).await.is_err()
            {
                return;
            }
            let mut stream = match api.cache.watch(&prefix, start).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(error_line(&watch_error(e))).await;
                    return;
                }
            };
            let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
            let sleep =
                tokio::time::sleep_until(deadline.unwrap_or_else(|| {
                    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
                }));
            tokio::pin!(sleep);
            let mut bookmarks = tokio::time::interval_at(
                tokio::time::Instant::now() + BOOKMARK_INTERVAL,
                BOOKMARK_INTERVAL,
            );
            let mut last_rev = start;
            // Every watch of this resource without selectors, in plain JSON
            // or in the same PartialObjectMetadata version, sends the same
            // line for an event: encode it once for all of them.
            let shared_lines = match enc.output {
                _ if !req.filter.is_everything() => None,
                Output::Json | Output::Yaml => Some(""),
                Output::PartialMetadata(av) => Some(av),
                Output::Table(_) => None,
            };
            loop {
                tokio::select! {
                    _ = api.shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    _ = &mut sleep => break,
                    _ = bookmarks.tick(), if req.allow_bookmarks => {
                        if tx.send(enc.bookmark(last_rev, false)).await.is_err() {
                            break;
                        }
                    }
                    ev = stream.next() => match ev {
                        None => break,
                        Some(Err(e)) => {
                            let _ = tx.send(error_line(&watch_error(e))).await;
                            break;
                        }
                        Some(Ok(ev)) => {
                            last_rev = ev.revision();
                            if only_key.as_deref().is_some_and(|k| ev.key() != k) {
                                continue;
                            }
                            let encode = || event_line(&req.filter, &enc, &ev);
                            let line = match shared_lines {
                                Some(output) => api.watch_lines.get_or_encode(r, output, ev.revision(), ev.key(), encode),
                                None => encode(),
                            };
                            match line {
                                Ok(Some(line)) => {
                                    if tx.send(line).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(None) => {}
                                Err(e) => tracing::warn!(key = ev.key(), error = %e, "skipping an undecodable watch event"),
                            }
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

fn watch_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        other => ApiError::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_kv(labels: Value, node: &str, revision: Revision) -> crate::storage::KeyValue {
        let obj = json!({"metadata": {"name": "p", "namespace": "d", "labels": labels},
            "spec": {"nodeName": node}});
        crate::storage::KeyValue {
            key: "/registry/pods/d/p".into(),
            value: serde_json::to_vec(&obj).unwrap().into(),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    #[test]
    fn a_label_selector_sees_objects_enter_and_leave_it() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let filter = Filter::new(pods, Some("app=web"), None).unwrap();
        let (web, other) = (json!({"app": "web"}), json!({"app": "db"}));
        let put = |old: Option<&Value>, new: &Value| Event::Put {
            kv: pod_kv(new.clone(), "n2", 3),
            prev: old.map(|o| pod_kv(o.clone(), "n1", 2)),
        };
        let enc = Encoder {
            resource: pods,
            output: Output::Json,
            include: IncludeObject::None,
        };
        let seen = |ev: &Event| {
            event_line(&filter, &enc, ev).unwrap().map(|line| {
                let line: Value = serde_json::from_slice(&line).unwrap();
                let obj = &line["object"];
                (
                    line["type"].clone(),
                    obj["spec"]["nodeName"].clone(),
                    obj["metadata"]["resourceVersion"].clone(),
                )
            })
        };
        let sent = |kind: &str, node: &str, rv: &str| Some((json!(kind), json!(node), json!(rv)));
        assert_eq!(seen(&put(None, &web)), sent("ADDED", "n2", "3"));
        assert_eq!(seen(&put(Some(&other), &web)), sent("ADDED", "n2", "3"));
        assert_eq!(seen(&put(Some(&web), &web)), sent("MODIFIED", "n2", "3"));
        // Leaving the selection is a DELETED of the new state.
        assert_eq!(seen(&put(Some(&web), &other)), sent("DELETED", "n2", "3"));
        assert_eq!(seen(&put(Some(&other), &other)), None);
        let delete = |labels: &Value| Event::Delete {
            prev: pod_kv(labels.clone(), "n1", 2),
            revision: 4,
        };
        assert_eq!(seen(&delete(&web)), sent("DELETED", "n1", "4"));
        assert_eq!(seen(&delete(&other)), None);
    }

    #[test]
    fn a_watch_line_names_its_type_before_the_object() {
        let l = line("ADDED", &json!({"kind": "Pod", "metadata": {"name": "p"}}));
        assert_eq!(
            &l[..],
            br#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p"}}}
"#
        );
    }
}
