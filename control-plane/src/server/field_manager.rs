//! Who a write is recorded for in managedFields: the `fieldManager` query
//! parameter or the User-Agent's product (`kubectl/v1.32.4 (linux/amd64)`
//! is `kubectl`), and upstream's checks of `fieldManager` and `force` on
//! PATCH. No I/O.

use crate::patch::PatchType;
use crate::registry::Cause;

use super::status::ApiError;

/// Upstream's `FieldManagerMaxLength`.
const MAX_LEN: usize = 128;

/// The manager of a request without `fieldManager`: the User-Agent up to
/// its first `/`, printable characters only, at most 128 bytes (upstream's
/// `prefixFromUserAgent`).
pub fn from_user_agent(user_agent: &str) -> String {
    let product = user_agent.split('/').next().unwrap_or("");
    clean(product)
}

/// `fieldManager` as recorded: printable, at most 128 bytes.
pub fn clean(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// `ValidatePatchOptions`: apply needs a `fieldManager`; `force` is for
/// apply only; the name is printable and at most 128 bytes.
pub fn validate_patch_options(
    patch_type: PatchType,
    field_manager: Option<&str>,
    force: Option<&str>,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let manager = field_manager.unwrap_or("");
    if patch_type == PatchType::Apply {
        if manager.is_empty() {
            causes.push(cause(
                "FieldValueRequired",
                "Required value: is required for apply patch",
            ));
        }
    } else if force.is_some() {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: may not be specified for non-apply patch".into(),
            field: "force".into(),
        });
    }
    if manager.len() > MAX_LEN {
        causes.push(cause(
            "FieldValueTooLong",
            &format!("Too long: may not be more than {MAX_LEN} bytes"),
        ));
    }
    if let Some((i, c)) = manager.char_indices().find(|(_, c)| c.is_control()) {
        causes.push(cause(
            "FieldValueInvalid",
            &format!(
                "Invalid value: {manager:?}: invalid character U+{:04X} (at position {i})",
                u32::from(c)
            ),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            &causes,
        ))
    }
}

fn cause(reason: &str, message: &str) -> Cause {
    Cause {
        reason: reason.into(),
        message: message.into(),
        field: "fieldManager".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_is_the_user_agent_product() {
        assert_eq!(
            from_user_agent("kubectl/v1.32.4 (linux/amd64) kubernetes/abc"),
            "kubectl"
        );
        assert_eq!(from_user_agent(""), "");
        assert_eq!(from_user_agent(&"x".repeat(300)).len(), 128);
    }

    #[test]
    fn apply_needs_a_field_manager_like_upstream() {
        let err = validate_patch_options(PatchType::Apply, None, None).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        );
        assert!(validate_patch_options(PatchType::Apply, Some("kubectl"), Some("true")).is_ok());
        let err = validate_patch_options(PatchType::Merge, None, Some("true")).unwrap_err();
        assert!(err.message.contains("force: Forbidden"), "{}", err.message);
    }
}
