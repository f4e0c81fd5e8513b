//! The pod-template-hash of a Deployment's template, as the label value and
//! ReplicaSet name suffix (upstream `controller.ComputeHash`), and template
//! equality that ignores that label (upstream `EqualIgnoreHash`).

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label and selector key that tells a Deployment's ReplicaSets apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The characters upstream's `rand.SafeEncodeString` maps to: no vowels (no
/// words) and no confusable characters.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-32a over the canonical JSON of the template (upstream hashes Go's
/// printed struct; the byte stream differs but the shape of the result, a
/// safe-encoded decimal of the 32-bit sum, is the same), salted with the
/// collision count.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h = Fnv32a::new();
    h.write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        h.write(&c.to_le_bytes());
    }
    safe_encode(&h.0.to_string())
}

/// Upstream `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Self {
        Self(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// Whether two templates are equal once the hash label is taken out of both.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut()
            && let Some(l) = m.labels.as_mut()
        {
            l.remove(POD_TEMPLATE_HASH);
            if l.is_empty() {
                m.labels = None;
            }
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        let mut h = Fnv32a::new();
        h.write(b"a");
        assert_eq!(h.0, 0xe40c_292c);
        let mut h = Fnv32a::new();
        h.write(b"foobar");
        assert_eq!(h.0, 0xbf9c_f968);
    }

    #[test]
    fn hash_looks_like_upstream_and_depends_on_template_and_collisions() {
        let a = compute_hash(&template("nginx"), None);
        assert!((1..=10).contains(&a.len()));
        assert!(a.bytes().all(|b| ALPHANUMS.contains(&b)), "{a}");
        assert_eq!(a, compute_hash(&template("nginx"), None));
        assert_ne!(a, compute_hash(&template("busybox"), None));
        assert_ne!(a, compute_hash(&template("nginx"), Some(1)));
    }

    #[test]
    fn safe_encode_maps_digits_like_upstream() {
        // '0' is byte 48, 48 % 27 = 21 -> '4'; '1' (49) -> '5'.
        assert_eq!(safe_encode("01"), "45");
    }

    #[test]
    fn equality_ignores_the_hash_label() {
        let a = template("nginx");
        let mut b = template("nginx");
        b.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), "abc".into());
        assert!(equal_ignore_hash(&a, &b));
        assert!(!equal_ignore_hash(&a, &template("busybox")));
    }
}
