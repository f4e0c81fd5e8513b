//! The cap on Update managers (upstream's `capManagersManager`): past
//! `MAX_UPDATE_MANAGERS` entries with operation Update, the oldest are
//! merged, per apiVersion, into one `ancient-changes` entry, so an object
//! written by many clients keeps a bounded managedFields.

use std::collections::HashMap;

use super::entries::{self, Entry, Operation};

/// kube-apiserver's `DefaultMaxUpdateManagers`.
pub const MAX_UPDATE_MANAGERS: usize = 10;
/// The manager of the merged entries (upstream's `ancient-changes`).
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// Merges the oldest Update entries of `list` until at most `max` remain.
pub fn cap_update_managers(list: &mut Vec<Entry>, max: usize) {
    let mut updaters: Vec<usize> = (0..list.len())
        .filter(|&i| list[i].operation == Operation::Update)
        .collect();
    if updaters.len() <= max {
        return;
    }
    // Oldest first; ties by the manager identifier, as upstream.
    updaters.sort_by(|&a, &b| {
        let (a, b) = (&list[a], &list[b]);
        entries::seconds(a)
            .cmp(&entries::seconds(b))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let mut first_of_version: HashMap<String, usize> = HashMap::new();
    let mut merged = vec![false; list.len()];
    let mut remaining = updaters.len();
    for i in updaters {
        if remaining <= max {
            break;
        }
        let version = list[i].api_version.clone();
        let Some(&first) = first_of_version.get(&version) else {
            first_of_version.insert(version, i);
            continue;
        };
        let bucket = (0..list.len())
            .find(|&b| !merged[b] && is_bucket(&list[b], &version))
            .unwrap_or_else(|| {
                // The first entry of this version becomes the bucket.
                list[first].manager = ANCIENT_CHANGES.into();
                list[first].subresource.clear();
                first
            });
        if bucket == i {
            continue;
        }
        let fields = list[i].fields.clone();
        list[bucket].fields.union(&fields);
        // The newer time, of the entry merged in.
        list[bucket].time = list[i].time.clone();
        merged[i] = true;
        remaining -= 1;
    }
    let mut index = 0;
    list.retain(|_| {
        let keep = !merged[index];
        index += 1;
        keep
    });
}

fn is_bucket(e: &Entry, version: &str) -> bool {
    e.manager == ANCIENT_CHANGES
        && e.operation == Operation::Update
        && e.api_version == version
        && e.subresource.is_empty()
}

#[cfg(test)]
mod tests {
    use super::super::path::PathElement;
    use super::super::set::FieldSet;
    use super::*;

    fn entry(manager: &str, version: &str, second: u32, field: &str) -> Entry {
        let mut fields = FieldSet::new();
        fields.insert(&[
            PathElement::Field("data".into()),
            PathElement::Field(field.into()),
        ]);
        Entry {
            manager: manager.into(),
            operation: Operation::Update,
            api_version: version.into(),
            time: Some(format!("2026-11-27T00:00:{second:02}Z")),
            subresource: String::new(),
            fields,
        }
    }

    fn managers(list: &[Entry]) -> Vec<&str> {
        list.iter().map(|e| e.manager.as_str()).collect()
    }

    #[test]
    fn at_most_the_cap_is_left_alone() {
        let mut list: Vec<Entry> = (0..3)
            .map(|i| entry(&format!("m{i}"), "v1", i, "k"))
            .collect();
        let before = list.clone();
        cap_update_managers(&mut list, 3);
        assert_eq!(list, before);
    }

    #[test]
    fn the_oldest_updates_of_one_version_merge_into_ancient_changes() {
        // Newest first in the list: the order is by time, not position.
        let mut list: Vec<Entry> = (0..5)
            .rev()
            .map(|i| entry(&format!("m{i}"), "v1", i, &format!("k{i}")))
            .collect();
        let mut apply = entry("kubectl", "v1", 0, "a");
        apply.operation = Operation::Apply;
        list.push(apply);
        cap_update_managers(&mut list, 3);
        assert_eq!(managers(&list), ["m4", "m3", "ancient-changes", "kubectl"]);
        let bucket = &list[2];
        for k in ["k0", "k1", "k2"] {
            assert!(
                bucket.fields.contains(&[
                    PathElement::Field("data".into()),
                    PathElement::Field(k.into())
                ]),
                "{k}"
            );
        }
        assert_eq!(bucket.time.as_deref(), Some("2026-11-27T00:00:02Z"));
    }

    #[test]
    fn versions_have_their_own_buckets_and_an_existing_bucket_is_reused() {
        let mut list = vec![
            entry("old-v1", "v1", 0, "a"),
            entry("old-beta", "v1beta1", 1, "b"),
            entry("mid-v1", "v1", 2, "c"),
            entry("mid-beta", "v1beta1", 3, "d"),
            entry("new", "v1", 4, "e"),
        ];
        cap_update_managers(&mut list, 3);
        let mut names = managers(&list);
        names.sort_unstable();
        assert_eq!(names, ["ancient-changes", "ancient-changes", "new"]);

        let mut list = vec![
            entry(ANCIENT_CHANGES, "v1", 0, "a"),
            entry("x", "v1", 1, "b"),
            entry("y", "v1", 2, "c"),
        ];
        cap_update_managers(&mut list, 2);
        assert_eq!(managers(&list), ["ancient-changes", "y"]);
        assert!(list[0].fields.contains(&[
            PathElement::Field("data".into()),
            PathElement::Field("b".into())
        ]));
    }
}
