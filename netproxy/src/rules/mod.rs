//! The ruleset of our one nftables table, and the transactions (full or per-Service) that apply it.
//!
//! Built as `nftables` crate objects and serialized to libnftables JSON. Named verdict maps go
//! as raw JSON objects, since the crate's `SetType` has no `verdict`.
pub mod build;
pub mod expr;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, NfObject, Rule, Set, SetFlag, SetType,
    SetTypeValue, Table,
};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::{Value, json};

pub use build::{RulesConfig, build};
use expr::{Expr, Stmt};

use crate::model::ServiceKey;

/// A chain and its rules, each rule a list of statements.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSpec {
    /// Chain name.
    pub name: String,
    /// Rules in order.
    pub rules: Vec<Vec<Stmt>>,
}

/// A chain of the fixed skeleton, with its hook when it is a base chain.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseChain {
    /// The chain.
    pub chain: ChainSpec,
    /// Type, hook and priority for base chains.
    pub hook: Option<(NfChainType, NfHook, i32)>,
}

/// One element of a named verdict map.
#[derive(Debug, Clone, PartialEq)]
pub struct MapElement {
    /// Map name.
    pub map: &'static str,
    /// Key (a concatenation).
    pub key: Expr,
    /// Verdict.
    pub verdict: Expr,
}

impl MapElement {
    fn new(map: &'static str, key: Expr, verdict: Expr) -> Self {
        Self { map, key, verdict }
    }
}

/// A per-endpoint ClientIP affinity set (`ipv4_addr`, dynamic, with timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinitySet {
    /// Set name.
    pub name: String,
    /// Element timeout in seconds.
    pub timeout: u32,
}

/// Everything one Service owns in the table; an incremental sync rewrites exactly this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceRules {
    /// Service, external and endpoint chains.
    pub chains: Vec<ChainSpec>,
    /// Affinity sets.
    pub sets: Vec<AffinitySet>,
    /// Elements in the shared maps.
    pub elements: Vec<MapElement>,
}

/// The whole content of our table.
#[derive(Debug, Clone, PartialEq)]
pub struct Ruleset {
    /// Table name (family `ip`).
    pub table: String,
    /// The fixed skeleton: hooks, dispatch, masquerading.
    pub base: Vec<BaseChain>,
    /// Per-Service chains, sets and map elements.
    pub services: BTreeMap<ServiceKey, ServiceRules>,
}

/// Verdict maps of the skeleton: name and key types.
const MAPS: [(&str, &[&str]); 4] = [
    (
        build::SERVICE_IPS,
        &["ipv4_addr", "inet_proto", "inet_service"],
    ),
    (build::SERVICE_NODEPORTS, &["inet_proto", "inet_service"]),
    (
        build::NO_ENDPOINT_SERVICES,
        &["ipv4_addr", "inet_proto", "inet_service"],
    ),
    (
        build::NO_ENDPOINT_NODEPORTS,
        &["inet_proto", "inet_service"],
    ),
];

/// An ordered list of nftables commands applied as one atomic transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transaction {
    commands: Vec<Value>,
}

impl Transaction {
    fn push(&mut self, cmd: NfCmd<'_>) {
        // Serializing these plain data types cannot fail (no maps with non-string keys).
        if let Ok(v) = serde_json::to_value(NfObject::CmdObject(cmd)) {
            self.commands.push(v);
        }
    }

    /// The commands, in order.
    pub fn commands(&self) -> &[Value] {
        &self.commands
    }

    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The libnftables JSON document (`{"nftables": [...]}`).
    pub fn to_json(&self) -> String {
        json!({ "nftables": self.commands }).to_string()
    }
}

impl Ruleset {
    fn table_obj(&self) -> Table<'_> {
        Table {
            family: NfFamily::IP,
            name: Cow::Borrowed(&self.table),
            handle: None,
        }
    }

    fn chain_obj<'a>(&'a self, name: &'a str) -> Chain<'a> {
        Chain {
            family: NfFamily::IP,
            table: Cow::Borrowed(&self.table),
            name: Cow::Borrowed(name),
            ..Default::default()
        }
    }

    fn add_rules(&self, tx: &mut Transaction, chain: &ChainSpec) {
        for stmts in &chain.rules {
            tx.push(NfCmd::Add(NfListObject::Rule(Rule {
                family: NfFamily::IP,
                table: Cow::Borrowed(&self.table),
                chain: Cow::Borrowed(&chain.name),
                expr: Cow::Borrowed(stmts),
                handle: None,
                index: None,
                comment: None,
            })));
        }
    }

    fn set_obj<'a>(&'a self, set: &'a AffinitySet) -> Set<'a> {
        Set {
            family: NfFamily::IP,
            table: Cow::Borrowed(&self.table),
            name: Cow::Borrowed(&set.name),
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            // nft 1.0.6 JSON knows no "dynamic" flag; nft adds it itself for sets used by `update`.
            flags: Some([SetFlag::Timeout].into()),
            timeout: Some(set.timeout),
            ..Default::default()
        }
    }

    fn element_cmd<'a>(&'a self, el: &'a MapElement, with_value: bool) -> NfListObject<'a> {
        let elem = if with_value {
            Expr::List(vec![el.key.clone(), el.verdict.clone()])
        } else {
            el.key.clone()
        };
        NfListObject::Element(Element {
            family: NfFamily::IP,
            table: Cow::Borrowed(&self.table),
            name: Cow::Borrowed(el.map),
            elem: Cow::Owned(vec![elem]),
        })
    }

    /// Number of rules in the table (for the `sync_proxy_rules_nftables` metric).
    pub fn rule_count(&self) -> usize {
        let base: usize = self.base.iter().map(|b| b.chain.rules.len()).sum();
        let svc: usize = self
            .services
            .values()
            .flat_map(|s| &s.chains)
            .map(|c| c.rules.len())
            .sum();
        base + svc
    }

    /// Number of chains in the table.
    pub fn chain_count(&self) -> usize {
        self.base.len()
            + self
                .services
                .values()
                .map(|s| s.chains.len())
                .sum::<usize>()
    }

    /// One transaction that atomically replaces our table (and touches nothing else):
    /// `add table` (so the delete cannot fail), `delete table`, then the whole content.
    pub fn full_transaction(&self) -> Transaction {
        let mut tx = Transaction::default();
        tx.push(NfCmd::Add(NfListObject::Table(self.table_obj())));
        tx.push(NfCmd::Delete(NfListObject::Table(self.table_obj())));
        tx.push(NfCmd::Add(NfListObject::Table(self.table_obj())));
        for (name, key) in MAPS {
            tx.commands.push(json!({"add": {"map": {
                "family": "ip", "table": self.table, "name": name,
                "type": key, "map": "verdict",
            }}}));
        }
        // Chains first, so that jumps and map elements can name any of them.
        for b in &self.base {
            let mut c = self.chain_obj(&b.chain.name);
            if let Some((ty, hook, prio)) = b.hook {
                c._type = Some(ty);
                c.hook = Some(hook);
                c.prio = Some(prio);
                c.policy = Some(NfChainPolicy::Accept);
            }
            tx.push(NfCmd::Add(NfListObject::Chain(c)));
        }
        for svc in self.services.values() {
            for c in &svc.chains {
                tx.push(NfCmd::Add(NfListObject::Chain(self.chain_obj(&c.name))));
            }
            for s in &svc.sets {
                tx.push(NfCmd::Add(NfListObject::Set(Box::new(self.set_obj(s)))));
            }
        }
        for b in &self.base {
            self.add_rules(&mut tx, &b.chain);
        }
        for svc in self.services.values() {
            for c in &svc.chains {
                self.add_rules(&mut tx, c);
            }
        }
        for svc in self.services.values() {
            for el in &svc.elements {
                tx.push(NfCmd::Add(self.element_cmd(el, true)));
            }
        }
        tx
    }

    /// The transaction that takes the kernel from `old` (last applied) to `self`, rewriting only
    /// the Services that changed. A different skeleton or table means a full replace.
    pub fn diff_transaction(&self, old: &Ruleset) -> Transaction {
        if old.table != self.table || old.base != self.base {
            return self.full_transaction();
        }
        let empty = ServiceRules::default();
        let changed: Vec<(&ServiceRules, &ServiceRules)> = old
            .services
            .keys()
            .chain(self.services.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|k| {
                let before = old.services.get(k).unwrap_or(&empty);
                let after = self.services.get(k).unwrap_or(&empty);
                (before != after).then_some((before, after))
            })
            .collect();
        let mut tx = Transaction::default();
        // 1. Take the old map entries out (they point at chains about to change).
        for (before, _) in &changed {
            for el in &before.elements {
                tx.push(NfCmd::Delete(old.element_cmd(el, false)));
            }
        }
        // 2. Create or empty every chain of the new version, and its sets.
        for (before, after) in &changed {
            let existing: BTreeSet<&str> = before.chains.iter().map(|c| c.name.as_str()).collect();
            let existing_sets: BTreeSet<&str> =
                before.sets.iter().map(|s| s.name.as_str()).collect();
            for c in &after.chains {
                if existing.contains(c.name.as_str()) {
                    tx.push(NfCmd::Flush(FlushObject::Chain(self.chain_obj(&c.name))));
                } else {
                    tx.push(NfCmd::Add(NfListObject::Chain(self.chain_obj(&c.name))));
                }
            }
            for s in &after.sets {
                if !existing_sets.contains(s.name.as_str()) {
                    tx.push(NfCmd::Add(NfListObject::Set(Box::new(self.set_obj(s)))));
                }
            }
        }
        // 3. Fill them, then point the maps at them.
        for (_, after) in &changed {
            for c in &after.chains {
                self.add_rules(&mut tx, c);
            }
        }
        for (_, after) in &changed {
            for el in &after.elements {
                tx.push(NfCmd::Add(self.element_cmd(el, true)));
            }
        }
        // 4. Remove what the new version no longer has: flush all first, since stale chains
        // may jump to each other and reference stale sets.
        let mut stale_chains = Vec::new();
        let mut stale_sets = Vec::new();
        for (before, after) in &changed {
            let keep: BTreeSet<&str> = after.chains.iter().map(|c| c.name.as_str()).collect();
            stale_chains.extend(
                before
                    .chains
                    .iter()
                    .filter(|c| !keep.contains(c.name.as_str())),
            );
            let keep: BTreeSet<&str> = after.sets.iter().map(|s| s.name.as_str()).collect();
            stale_sets.extend(
                before
                    .sets
                    .iter()
                    .filter(|s| !keep.contains(s.name.as_str())),
            );
        }
        for c in &stale_chains {
            tx.push(NfCmd::Flush(FlushObject::Chain(self.chain_obj(&c.name))));
        }
        for c in &stale_chains {
            tx.push(NfCmd::Delete(NfListObject::Chain(self.chain_obj(&c.name))));
        }
        for s in &stale_sets {
            tx.push(NfCmd::Delete(NfListObject::Set(Box::new(self.set_obj(s)))));
        }
        tx
    }

    /// The transaction that removes our table (used on shutdown with `--cleanup` and in tests).
    pub fn delete_table_transaction(table: &str) -> Transaction {
        let t = Table {
            family: NfFamily::IP,
            name: Cow::Borrowed(table),
            handle: None,
        };
        let mut tx = Transaction::default();
        tx.push(NfCmd::Add(NfListObject::Table(t.clone())));
        tx.push(NfCmd::Delete(NfListObject::Table(t)));
        tx
    }
}
