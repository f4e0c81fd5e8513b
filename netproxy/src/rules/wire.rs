//! Map and set elements in the kernel's byte layout, for a full sync that sends them over
//! netlink ([`r8s_nft::elements`]) instead of as nft syntax. Each field of a concatenation
//! takes a multiple of 4 bytes (nf_tables registers), as nft lays them out.
use std::net::Ipv4Addr;

use nftables::expr::{Expression, NamedExpression, Verdict};
use r8s_nft::elements::{ElementData, SetElements};

use super::MapElement;
use super::build;
use super::expr::Expr;

/// One field of a key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `ipv4_addr`: 4 bytes, network order.
    Ip,
    /// `inet_proto`: 1 byte, padded.
    Proto,
    /// `inet_service`: 2 bytes, network order, padded.
    Port,
    /// The `numgen` draw: a 32-bit integer in host order.
    Draw,
}

use Field::{Draw, Ip, Port, Proto};

/// Key fields of each map of the skeleton.
fn key_fields(map: &str) -> Option<&'static [Field]> {
    match map {
        build::SERVICE_IPS | build::NO_ENDPOINT_SERVICES => Some(&[Ip, Proto, Port]),
        build::SERVICE_NODEPORTS | build::NO_ENDPOINT_NODEPORTS => Some(&[Proto, Port]),
        build::ENDPOINTS => Some(&[Ip, Proto, Port, Draw]),
        _ => None,
    }
}

/// The value fields of the `endpoints` data map.
const ENDPOINT_VALUE: [Field; 2] = [Ip, Port];

fn field(f: Field, e: &Expr, out: &mut Vec<u8>) -> Option<()> {
    match (f, e) {
        (Ip, Expression::String(s)) => out.extend_from_slice(&s.parse::<Ipv4Addr>().ok()?.octets()),
        (Proto, Expression::String(s)) => {
            let p: u8 = match s.as_ref() {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                _ => return None,
            };
            out.extend_from_slice(&[p, 0, 0, 0]);
        }
        (Port, Expression::Number(n)) => {
            out.extend_from_slice(&u16::try_from(*n).ok()?.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        (Draw, Expression::Number(n)) => out.extend_from_slice(&n.to_ne_bytes()),
        _ => return None,
    }
    Some(())
}

fn encode(fields: &[Field], e: &Expr) -> Option<Vec<u8>> {
    let items: Vec<&Expr> = match e {
        Expression::Named(NamedExpression::Concat(items)) => items.iter().collect(),
        other => vec![other],
    };
    if items.len() != fields.len() {
        return None;
    }
    let mut out = Vec::with_capacity(4 * fields.len());
    for (f, item) in fields.iter().zip(items) {
        field(*f, item, &mut out)?;
    }
    Some(out)
}

/// One map element as key bytes and data; `None` for anything the layout does not know
/// (the caller then sends nft syntax).
pub fn element(el: &MapElement) -> Option<(Vec<u8>, ElementData)> {
    let key = encode(key_fields(el.map)?, &el.key)?;
    let data = match &el.value {
        Expression::Verdict(Verdict::Goto(t)) => ElementData::Goto(t.target.to_string()),
        value if el.map == build::ENDPOINTS => ElementData::Value(encode(&ENDPOINT_VALUE, value)?),
        _ => return None,
    };
    Some((key, data))
}

/// The hairpin set's elements, `P . P` for every address.
pub fn hairpin<'a>(addrs: impl Iterator<Item = &'a Ipv4Addr>) -> SetElements {
    SetElements {
        set: build::HAIRPIN.to_string(),
        elements: addrs
            .map(|a| ([a.octets(), a.octets()].concat(), ElementData::None))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::expr;

    #[test]
    fn endpoint_elements_are_laid_out_in_4_byte_fields() {
        let el = MapElement {
            map: build::ENDPOINTS,
            key: expr::concat(vec![
                expr::ip(Ipv4Addr::new(10, 43, 0, 10)),
                expr::string("udp"),
                Expression::Number(53),
                Expression::Number(2),
            ]),
            value: expr::concat(vec![
                expr::ip(Ipv4Addr::new(10, 42, 0, 5)),
                Expression::Number(5353),
            ]),
        };
        let (key, data) = element(&el).unwrap();
        let mut want = vec![10, 43, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0];
        want.extend_from_slice(&2u32.to_ne_bytes());
        assert_eq!(key, want);
        assert_eq!(
            data,
            ElementData::Value(vec![10, 42, 0, 5, 0x14, 0xe9, 0, 0])
        );
    }

    #[test]
    fn verdict_elements_go_to_their_chain_and_unknown_maps_are_refused() {
        let el = MapElement {
            map: build::SERVICE_NODEPORTS,
            key: expr::concat(vec![expr::string("tcp"), Expression::Number(30080)]),
            value: expr::goto_verdict("external-x"),
        };
        let (key, data) = element(&el).unwrap();
        assert_eq!(key, vec![6, 0, 0, 0, 0x75, 0x80, 0, 0]);
        assert_eq!(data, ElementData::Goto("external-x".into()));
        assert_eq!(element(&MapElement { map: "other", ..el }), None);
    }
}
