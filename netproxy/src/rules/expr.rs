//! Small constructors for the nftables crate's typed expressions and statements the builder uses.
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::Ipv4Addr;

use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression,
    NgMode, Numgen, Payload, PayloadField, Prefix, Verdict,
};
use nftables::stmt::{JumpTarget, Mangle, Match, NAT, Operator, Statement};

use crate::model::{Ipv4Cidr, Protocol};

/// Mark bit for "masquerade this connection", as kube-proxy's `--masquerade-bit` 14 default.
pub const MASQUERADE_MARK: u32 = 0x4000;

pub type Expr = Expression<'static>;
pub type Stmt = Statement<'static>;

pub fn payload(protocol: &'static str, field: &'static str) -> Expr {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

pub fn meta(key: MetaKey) -> Expr {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub fn string(s: impl Into<String>) -> Expr {
    Expression::String(Cow::Owned(s.into()))
}

pub fn ip(addr: Ipv4Addr) -> Expr {
    string(addr.to_string())
}

pub fn prefix(cidr: Ipv4Cidr) -> Expr {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(ip(cidr.addr)),
        len: u32::from(cidr.len),
    }))
}

pub fn concat(items: Vec<Expr>) -> Expr {
    Expression::Named(NamedExpression::Concat(items))
}

/// `ip daddr . meta l4proto . th dport`, the service-ips key.
pub fn daddr_proto_port() -> Expr {
    concat(vec![
        payload("ip", "daddr"),
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ])
}

/// `meta l4proto . th dport`, the nodeport key.
pub fn proto_port() -> Expr {
    concat(vec![meta(MetaKey::L4proto), payload("th", "dport")])
}

pub fn matches(left: Expr, op: Operator, right: Expr) -> Stmt {
    Statement::Match(Match { left, right, op })
}

pub fn eq(left: Expr, right: Expr) -> Stmt {
    matches(left, Operator::EQ, right)
}

/// `fib <saddr|daddr> type local`.
pub fn fib_local(flag: FibFlag) -> Stmt {
    eq(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([flag]),
        })),
        string("local"),
    )
}

/// `ct state new`.
pub fn ct_state_new() -> Stmt {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        string("new"),
    )
}

/// `ct status dnat`.
pub fn ct_status_dnat() -> Stmt {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: "status".into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        string("dnat"),
    )
}

pub fn proto(p: Protocol) -> Stmt {
    eq(meta(MetaKey::L4proto), string(p.as_str()))
}

pub fn jump(target: impl Into<String>) -> Stmt {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(target.into()),
    })
}

pub fn goto(target: impl Into<String>) -> Stmt {
    Statement::Goto(JumpTarget {
        target: Cow::Owned(target.into()),
    })
}

pub fn goto_verdict(target: impl Into<String>) -> Expr {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: Cow::Owned(target.into()),
    }))
}

pub fn vmap(key: Expr, data: Expr) -> Stmt {
    Statement::VerdictMap(nftables::stmt::VerdictMap { key, data })
}

/// `numgen random mod N`: 0 to N-1, evenly.
pub fn numgen(n: u32) -> Expr {
    Expression::Named(NamedExpression::Numgen(Numgen {
        mode: NgMode::Random,
        ng_mod: n,
        offset: None,
    }))
}

/// `numgen random mod N == 0`: true with probability 1/N.
pub fn numgen_one_in(n: u32) -> Stmt {
    eq(numgen(n), Expression::Number(0))
}

/// `meta mark set meta mark <op> MASQUERADE_MARK`.
pub fn mark_set(or: bool) -> Stmt {
    let mark = meta(MetaKey::Mark);
    let bit = Expression::Number(MASQUERADE_MARK);
    let value = if or {
        BinaryOperation::OR(vec![mark.clone(), bit])
    } else {
        BinaryOperation::XOR(mark.clone(), bit)
    };
    Statement::Mangle(Mangle {
        key: mark,
        value: Expression::BinaryOperation(Box::new(value)),
    })
}

/// `meta mark & MASQUERADE_MARK == 0`.
pub fn mark_unset() -> Stmt {
    eq(
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            meta(MetaKey::Mark),
            Expression::Number(MASQUERADE_MARK),
        ))),
        Expression::Number(0),
    )
}

pub fn dnat(addr: Ipv4Addr, port: u16) -> Stmt {
    Statement::DNAT(Some(NAT {
        addr: Some(ip(addr)),
        family: None,
        port: Some(Expression::Number(u32::from(port))),
        flags: None,
    }))
}

/// `dnat ip to KEY map @MAP`: address and port from a data map of `ipv4_addr . inet_service`.
pub fn dnat_map(key: Expr, map: &str) -> Stmt {
    Statement::DNAT(Some(NAT {
        addr: Some(Expression::Named(NamedExpression::Map(Box::new(
            nftables::expr::Map {
                key,
                data: string(format!("@{map}")),
            },
        )))),
        family: Some(nftables::stmt::NATFamily::IP),
        port: None,
        flags: None,
    }))
}

/// `update @set { ip saddr }`; the set's own timeout applies.
pub fn update_saddr(set: &str) -> Stmt {
    Statement::Set(nftables::stmt::Set {
        op: nftables::stmt::SetOp::Update,
        elem: payload("ip", "saddr"),
        set: Cow::Owned(format!("@{set}")),
    })
}
