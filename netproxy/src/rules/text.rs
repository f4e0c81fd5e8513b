//! Renders the builder's statements as nft syntax, the text libnftables parses fastest (as
//! kube-proxy's knftables feeds `nft -f -`); only the expressions the builder uses are known.
use std::fmt::Write;

use nftables::expr::{
    BinaryOperation, Expression, FibFlag, MetaKey, NamedExpression, NgMode, SetItem, Verdict,
};
use nftables::stmt::{NATFlag, Operator, SetOp, Statement};

use super::expr::{Expr, Stmt};

/// A token nft rejects, written where the builder produced something this module does not know
/// (a programming error that then fails the transaction instead of changing its meaning).
const UNSUPPORTED: &str = "__r8s_unsupported__";

/// Appends one rule (its statements, space-separated) to `out`.
pub fn rule(stmts: &[Stmt], out: &mut String) {
    for (i, s) in stmts.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        stmt(s, out);
    }
}

/// One rule as a string.
pub fn rule_string(stmts: &[Stmt]) -> String {
    let mut out = String::with_capacity(64);
    rule(stmts, &mut out);
    out
}

fn stmt(s: &Stmt, out: &mut String) {
    match s {
        Statement::Match(m) => {
            expr(&m.left, out);
            let op = match m.op {
                // A set (named or anonymous) on the right is a lookup; `==` would not be one.
                Operator::EQ | Operator::IN if is_set(&m.right) => " ",
                Operator::IN => " ",
                Operator::EQ => " == ",
                Operator::NEQ => " != ",
                Operator::LT => " < ",
                Operator::GT => " > ",
                Operator::LEQ => " <= ",
                Operator::GEQ => " >= ",
                _ => " __r8s_unsupported__ ",
            };
            out.push_str(op);
            expr(&m.right, out);
        }
        Statement::Jump(j) => {
            out.push_str("jump ");
            out.push_str(&j.target);
        }
        Statement::Goto(j) => {
            out.push_str("goto ");
            out.push_str(&j.target);
        }
        Statement::VerdictMap(v) => {
            expr(&v.key, out);
            out.push_str(" vmap ");
            expr(&v.data, out);
        }
        Statement::Mangle(m) => {
            expr(&m.key, out);
            out.push_str(" set ");
            expr(&m.value, out);
        }
        Statement::Return(None) => out.push_str("return"),
        Statement::Drop(None) => out.push_str("drop"),
        Statement::Accept(None) => out.push_str("accept"),
        Statement::Reject(None) => out.push_str("reject"),
        Statement::Masquerade(nat) => {
            out.push_str("masquerade");
            if let Some(flags) = nat.as_ref().and_then(|n| n.flags.as_ref()) {
                for f in flags {
                    out.push_str(match f {
                        NATFlag::FullyRandom => " fully-random",
                        NATFlag::Random => " random",
                        NATFlag::Persistent => " persistent",
                    });
                }
            }
        }
        Statement::DNAT(Some(nat)) => {
            out.push_str(match nat.family {
                Some(nftables::stmt::NATFamily::IP) => "dnat ip to ",
                Some(nftables::stmt::NATFamily::IP6) => "dnat ip6 to ",
                None => "dnat to ",
            });
            match &nat.addr {
                Some(a) => expr(a, out),
                None => out.push_str(UNSUPPORTED),
            }
            if let Some(p) = &nat.port {
                out.push(':');
                expr(p, out);
            }
        }
        Statement::Set(set) => {
            out.push_str(match set.op {
                SetOp::Update => "update ",
                SetOp::Add => "add ",
            });
            out.push_str(&set.set);
            out.push_str(" { ");
            expr(&set.elem, out);
            out.push_str(" }");
        }
        _ => out.push_str(UNSUPPORTED),
    }
}

fn is_set(e: &Expr) -> bool {
    match e {
        Expression::String(s) => s.starts_with('@'),
        Expression::Named(NamedExpression::Set(_)) => true,
        _ => false,
    }
}

/// Appends one expression to `out`.
pub fn expr(e: &Expr, out: &mut String) {
    match e {
        Expression::String(s) => out.push_str(s),
        Expression::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Expression::Boolean(b) => out.push_str(if *b { "exists" } else { "missing" }),
        Expression::List(items) => join(items, ", ", out),
        Expression::BinaryOperation(op) => {
            let (items, sym): (Vec<&Expr>, &str) = match op.as_ref() {
                BinaryOperation::AND(a, b) => (vec![a, b], " & "),
                BinaryOperation::XOR(a, b) => (vec![a, b], " ^ "),
                BinaryOperation::LSHIFT(a, b) => (vec![a, b], " << "),
                BinaryOperation::RSHIFT(a, b) => (vec![a, b], " >> "),
                BinaryOperation::OR(v) => (v.iter().collect(), " | "),
            };
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(sym);
                }
                expr(item, out);
            }
        }
        Expression::Verdict(v) => verdict(v, out),
        Expression::Named(n) => named(n, out),
        Expression::Range(r) => {
            expr(&r.range[0], out);
            out.push('-');
            expr(&r.range[1], out);
        }
    }
}

fn verdict(v: &Verdict<'static>, out: &mut String) {
    match v {
        Verdict::Goto(t) => {
            out.push_str("goto ");
            out.push_str(&t.target);
        }
        Verdict::Jump(t) => {
            out.push_str("jump ");
            out.push_str(&t.target);
        }
        Verdict::Accept => out.push_str("accept"),
        Verdict::Drop => out.push_str("drop"),
        Verdict::Return => out.push_str("return"),
        _ => out.push_str(UNSUPPORTED),
    }
}

fn join(items: &[Expr], sep: &str, out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        expr(item, out);
    }
}

fn named(n: &NamedExpression<'static>, out: &mut String) {
    match n {
        NamedExpression::Payload(nftables::expr::Payload::PayloadField(p)) => {
            out.push_str(&p.protocol);
            out.push(' ');
            out.push_str(&p.field);
        }
        NamedExpression::Meta(m) => {
            out.push_str("meta ");
            out.push_str(match m.key {
                MetaKey::L4proto => "l4proto",
                MetaKey::Mark => "mark",
                MetaKey::Nfproto => "nfproto",
                MetaKey::Iifname => "iifname",
                MetaKey::Oifname => "oifname",
                _ => UNSUPPORTED,
            });
        }
        NamedExpression::Prefix(p) => {
            expr(&p.addr, out);
            let _ = write!(out, "/{}", p.len);
        }
        NamedExpression::Concat(items) => join(items, " . ", out),
        NamedExpression::Fib(f) => {
            out.push_str("fib");
            // nft orders fib flags as saddr/daddr first, then mark/iif/oif.
            for (flag, word) in [
                (FibFlag::Saddr, " saddr"),
                (FibFlag::Daddr, " daddr"),
                (FibFlag::Mark, " . mark"),
                (FibFlag::Iif, " . iif"),
                (FibFlag::Oif, " . oif"),
            ] {
                if f.flags.contains(&flag) {
                    out.push_str(word);
                }
            }
            out.push_str(match f.result {
                nftables::expr::FibResult::Type => " type",
                nftables::expr::FibResult::Oif => " oif",
                nftables::expr::FibResult::Oifname => " oifname",
            });
        }
        NamedExpression::CT(ct) => {
            out.push_str("ct ");
            out.push_str(&ct.key);
        }
        NamedExpression::Set(items) => {
            out.push_str("{ ");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match item {
                    SetItem::Element(e) => expr(e, out),
                    SetItem::Mapping(k, v) => {
                        expr(k, out);
                        out.push_str(" : ");
                        expr(v, out);
                    }
                    SetItem::MappingStatement(..) => out.push_str(UNSUPPORTED),
                }
            }
            out.push_str(" }");
        }
        NamedExpression::Map(m) => {
            expr(&m.key, out);
            out.push_str(" map ");
            expr(&m.data, out);
        }
        NamedExpression::Numgen(ng) => {
            out.push_str(match ng.mode {
                NgMode::Random => "numgen random mod ",
                NgMode::Inc => "numgen inc mod ",
            });
            let _ = write!(out, "{}", ng.ng_mod);
            if let Some(off) = ng.offset {
                let _ = write!(out, " offset {off}");
            }
        }
        _ => out.push_str(UNSUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::expr as e;
    use nftables::expr::FibFlag;

    #[test]
    fn renders_every_statement_the_builder_uses() {
        let cidr = "10.42.0.0/16".parse().unwrap();
        let cases: Vec<(Vec<Stmt>, &str)> = vec![
            (
                vec![
                    e::eq(
                        e::payload("ip", "daddr"),
                        e::ip("10.43.0.10".parse().unwrap()),
                    ),
                    e::matches(e::payload("ip", "saddr"), Operator::NEQ, e::prefix(cidr)),
                    e::jump("mark-for-masquerade"),
                ],
                "ip daddr == 10.43.0.10 ip saddr != 10.42.0.0/16 jump mark-for-masquerade",
            ),
            (
                vec![e::fib_local(FibFlag::Daddr)],
                "fib daddr type == local",
            ),
            (vec![e::ct_state_new(), e::jump("x")], "ct state new jump x"),
            (
                vec![e::vmap(e::daddr_proto_port(), e::string("@service-ips"))],
                "ip daddr . meta l4proto . th dport vmap @service-ips",
            ),
            (
                vec![e::numgen_one_in(3), e::goto("a")],
                "numgen random mod 3 == 0 goto a",
            ),
            (vec![e::mark_set(true)], "meta mark set meta mark | 16384"),
            (
                vec![e::mark_unset(), Statement::Return(None)],
                "meta mark & 16384 == 0 return",
            ),
            (
                vec![
                    e::proto(crate::model::Protocol::Udp),
                    e::dnat("10.42.0.5".parse().unwrap(), 53),
                ],
                "meta l4proto == udp dnat to 10.42.0.5:53",
            ),
            (
                vec![e::update_saddr("affinity-x")],
                "update @affinity-x { ip saddr }",
            ),
            (
                vec![
                    e::eq(e::payload("ip", "saddr"), e::string("@affinity-x")),
                    e::goto("y"),
                ],
                "ip saddr @affinity-x goto y",
            ),
        ];
        for (stmts, want) in cases {
            assert_eq!(rule_string(&stmts), want);
        }
    }

    #[test]
    fn unknown_statements_make_the_rule_invalid() {
        let s = Statement::Counter(nftables::stmt::Counter::Anonymous(None));
        assert!(rule_string(&[s]).contains(UNSUPPORTED));
    }
}
