//! `--kube-reserved` / `--system-reserved` as kubelet's `parseResourceList`:
//! typed reservations subtracted from capacity to get allocatable.

use std::collections::BTreeMap;

use crate::quantity::{ParsedQuantity, QuantityError};

/// Reserved amounts by resource name (`cpu`, `memory`, `ephemeral-storage`, `pid`).
pub type ResourceReservation = BTreeMap<String, ParsedQuantity>;

/// Why a reservation was rejected; messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservedError {
    #[error("{0}")]
    Malformed(String),
    #[error("failed to parse quantity {value:?} for {name:?} resource: {source}")]
    Quantity {
        name: String,
        value: String,
        #[source]
        source: QuantityError,
    },
    #[error("resource quantity for {name:?} cannot be negative: {value}")]
    Negative { name: String, value: String },
    #[error("cannot reserve {0:?} resource")]
    Unsupported(String),
}

/// Parses `cpu=100m,memory=256Mi,ephemeral-storage=1Gi,pid=1000`.
pub fn parse_reserved(s: &str) -> Result<ResourceReservation, ReservedError> {
    let map = super::parse::parse_map(s, '=').map_err(ReservedError::Malformed)?;
    let mut out = ResourceReservation::new();
    for (name, value) in map {
        if !matches!(
            name.as_str(),
            "cpu" | "memory" | "ephemeral-storage" | "pid"
        ) {
            return Err(ReservedError::Unsupported(name));
        }
        let q = ParsedQuantity::parse(&value).map_err(|source| ReservedError::Quantity {
            name: name.clone(),
            value: value.clone(),
            source,
        })?;
        if q.is_negative() {
            return Err(ReservedError::Negative { name, value });
        }
        out.insert(name, q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_reservations_parse_to_typed_values() {
        let r = parse_reserved("cpu=100m,memory=256Mi").unwrap();
        assert_eq!(r["cpu"].milli_value(), 100);
        assert_eq!(r["memory"].value(), 256 << 20);
    }

    #[test]
    fn unknown_resources_and_bad_quantities_are_refused() {
        assert_eq!(
            parse_reserved("gpu=1").unwrap_err().to_string(),
            "cannot reserve \"gpu\" resource"
        );
        assert_eq!(
            parse_reserved("memory=-1Mi").unwrap_err().to_string(),
            "resource quantity for \"memory\" cannot be negative: -1Mi"
        );
        assert_eq!(
            parse_reserved("cpu=lots").unwrap_err().to_string(),
            "failed to parse quantity \"lots\" for \"cpu\" resource: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
        assert_eq!(
            parse_reserved("cpu").unwrap_err().to_string(),
            "malformed pair, expect string=string"
        );
    }
}
