//! HorizontalPodAutoscalers and PodDisruptionBudgets: replica bounds,
//! scale targets and budget fields. No I/O.

use serde_json::Value;

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::get_str;

/// Validates an HPA spec (autoscaling/v1 or v2).
pub fn validate_hpa(hpa: &Value) -> Vec<Cause> {
    let spec = FieldPath::new("spec");
    let mut errs = Vec::new();
    let min = hpa.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = hpa
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(min) = min
        && min < 1
    {
        errs.push(field::invalid(
            &spec.child("minReplicas"),
            min,
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        errs.push(field::invalid(
            &spec.child("maxReplicas"),
            max,
            "must be greater than 0",
        ));
    }
    if let Some(min) = min
        && max < min
    {
        errs.push(field::invalid(
            &spec.child("maxReplicas"),
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let target = spec.child("scaleTargetRef");
    for key in ["kind", "name"] {
        if get_str(hpa, &["spec", "scaleTargetRef", key]).is_empty() {
            errs.push(field::required(&target.child(key), ""));
        }
    }
    if let Some(cpu) = hpa
        .pointer("/spec/targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
        && cpu < 1
    {
        errs.push(field::invalid(
            &spec.child("targetCPUUtilizationPercentage"),
            cpu,
            "must be greater than or equal to 1",
        ));
    }
    errs
}

/// Validates a PodDisruptionBudget spec.
pub fn validate_pdb(pdb: &Value) -> Vec<Cause> {
    let spec = FieldPath::new("spec");
    let mut errs = Vec::new();
    let min = pdb.pointer("/spec/minAvailable").filter(|v| !v.is_null());
    let max = pdb.pointer("/spec/maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.push(field::invalid(
            &spec,
            BadValue::Raw("policy.PodDisruptionBudgetSpec{...}".into()),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (key, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        match v {
            Some(Value::Number(n)) if n.as_i64().unwrap_or(0) < 0 => errs.push(field::invalid(
                &spec.child(key),
                n.as_i64().unwrap_or(0),
                "must be greater than or equal to 0",
            )),
            Some(Value::String(s)) => {
                match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                    Some(p) if (0..=100).contains(&p) => {}
                    Some(_) => errs.push(field::invalid(
                        &spec.child(key),
                        s.as_str(),
                        "must not be greater than 100%",
                    )),
                    None => errs.push(field::invalid(
                        &spec.child(key),
                        s.as_str(),
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    )),
                }
            }
            _ => {}
        }
    }
    if let Some(sel) = pdb.pointer("/spec/selector").filter(|v| !v.is_null()) {
        errs.extend(super::deployment::validate_label_selector(
            sel,
            &spec.child("selector"),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hpa_bounds() {
        let hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 3, "maxReplicas": 2}});
        assert_eq!(
            validate_hpa(&hpa)[0].to_string(),
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        );
    }

    #[test]
    fn pdb_fields_are_exclusive() {
        let pdb = json!({"spec": {"minAvailable": 1, "maxUnavailable": "10%"}});
        assert!(
            validate_pdb(&pdb)[0]
                .message
                .ends_with("minAvailable and maxUnavailable cannot be both set")
        );
        assert!(validate_pdb(&json!({"spec": {"minAvailable": "50%"}})).is_empty());
    }
}
