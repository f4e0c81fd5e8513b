//! Image reference normalization: `busybox` -> `docker.io/library/busybox:latest`, like containerd.
use oci_client::Reference;

/// Parses and normalizes an image reference; `None` if it is not a valid reference.
pub fn normalize(image: &str) -> Option<Reference> {
    image.parse::<Reference>().ok()
}

/// `registry/repository:tag` of a parsed reference, or `None` for digest-only references.
pub fn repo_tag(r: &Reference) -> Option<String> {
    r.tag()
        .map(|t| format!("{}/{}:{}", r.registry(), r.repository(), t))
}

/// `registry/repository@digest` for a manifest digest.
pub fn repo_digest(r: &Reference, digest: &str) -> String {
    format!("{}/{}@{}", r.registry(), r.repository(), digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_get_docker_hub_defaults() {
        let r = normalize("busybox").unwrap();
        assert_eq!(repo_tag(&r).unwrap(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn registry_with_port_is_kept() {
        let r = normalize("127.0.0.1:5000/busybox:1.36").unwrap();
        assert_eq!(repo_tag(&r).unwrap(), "127.0.0.1:5000/busybox:1.36");
        assert_eq!(
            repo_digest(&r, "sha256:ab"),
            "127.0.0.1:5000/busybox@sha256:ab"
        );
    }
}
