//! The ruleset of our one nftables table, and the transactions (full or per-Service) that apply it.
//!
//! Rules are built as `nftables` crate statements and rendered as nft syntax (`text`), the input
//! libnftables parses fastest. Incremental transactions use only commands for which nft 1.0.6
//! fetches no chain cache (`flush chain`, `add chain NAME { rules }`, `add map NAME { elements }`):
//! `add rule`, `add element` and any `delete` make it dump every chain of the host first, which
//! costs O(table) (and O(table²) in the kernel's dump). Deleting stale chains and sets is
//! therefore deferred ([`Leftovers`]) until a transaction needs the cache anyway.
//!
//! Layout: a plain ClusterIP Service port owns no chain and no rule, only map elements: its
//! `service-ips` entry goes to the shared `pick-N` chain for its endpoint count N, which DNATs
//! through the `endpoints` data map keyed by `ClusterIP . proto . port . (numgen random mod N)`.
//! A rollout then only swaps map elements, and the table's rule count does not grow with the
//! Services. Ports with NodePorts, external IPs, ClientIP affinity or a Local internal traffic
//! policy keep one chain per Service port (plus one for the external side) that picks an
//! endpoint and DNATs inline. The hairpin masquerade is one postrouting rule over the `hairpin`
//! set. Every commit that adds a rule or a verdict makes the kernel validate every rule
//! reachable from the base chains and visit every chain of the table, so both counts are what
//! such a change costs (docs/benchmarks.md).
pub mod build;
pub mod expr;
pub mod text;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use nftables::types::{NfChainType, NfHook};

pub use build::{RulesConfig, build, build_reusing, service_rules};
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

/// One element of a named map: a verdict map, or the `endpoints` data map.
#[derive(Debug, Clone, PartialEq)]
pub struct MapElement {
    /// Map name.
    pub map: &'static str,
    /// Key (a concatenation).
    pub key: Expr,
    /// Verdict or data.
    pub value: Expr,
}

impl MapElement {
    fn new(map: &'static str, key: Expr, value: Expr) -> Self {
        Self { map, key, value }
    }

    fn key_text(&self) -> String {
        let mut s = String::new();
        text::expr(&self.key, &mut s);
        s
    }

    fn text(&self, out: &mut String) {
        text::expr(&self.key, out);
        out.push_str(" : ");
        text::expr(&self.value, out);
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
    /// Endpoint counts N of the shared `pick-N` chains its elements go to.
    pub picks: Vec<u32>,
    /// Endpoint addresses for the hairpin set, sorted. Incremental syncs only add to the set:
    /// an address another Service still uses must stay, and one no Service uses any more is
    /// harmless there (it only matches a DNAT of that address to itself); full syncs recreate
    /// the set with exactly the current addresses.
    pub hairpin: Vec<Ipv4Addr>,
}

/// The whole content of our table.
#[derive(Debug, Clone, PartialEq)]
pub struct Ruleset {
    /// Table name (family `ip`).
    pub table: String,
    /// The fixed skeleton: hooks, dispatch, masquerading.
    pub base: Vec<BaseChain>,
    /// Per-Service chains, sets and map elements (shared with the previous ruleset when the
    /// Service did not change, so that a sync rebuilds only what changed).
    pub services: BTreeMap<ServiceKey, Arc<ServiceRules>>,
    /// The `pick-N` chains in the table: those a full sync creates, plus those incremental
    /// syncs added since (a chain no element goes to any more stays until the next full sync).
    pub picks: BTreeSet<u32>,
    /// The rules of every `pick-N` chain but the endpoint count (depend on the config only).
    pub pick: build::PickRules,
}

/// Type of the hairpin set.
const HAIRPIN_TYPE: &str = "ipv4_addr . ipv4_addr";

/// Maps of the skeleton: name and type.
const MAPS: [(&str, &str); 5] = [
    (
        build::SERVICE_IPS,
        "type ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (
        build::SERVICE_NODEPORTS,
        "type inet_proto . inet_service : verdict",
    ),
    (
        build::NO_ENDPOINT_SERVICES,
        "type ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (
        build::NO_ENDPOINT_NODEPORTS,
        "type inet_proto . inet_service : verdict",
    ),
    // The key's last field is the `numgen` draw of the `pick-N` chains (a 32-bit integer,
    // which only `typeof` can name). `tcp dport` only names the type: the rules load the same
    // bytes with `th dport`, for UDP and SCTP too. (With `th dport` here, nft 1.0.6 rejects
    // every later rule that uses the map once it has read the map back from the kernel:
    // "conflicting protocols specified: ip vs. th".)
    (
        build::ENDPOINTS,
        "typeof ip daddr . meta l4proto . tcp dport . numgen random mod 1 : ip daddr . tcp dport",
    ),
];

fn map_type(map: &str) -> &'static str {
    MAPS.iter()
        .find(|(name, _)| *name == map)
        .map_or("", |(_, ty)| ty)
}

/// Stale chains and sets left in the kernel by incremental syncs: flushed, referenced by nothing,
/// deleted by a later transaction that needs nft's full cache anyway (or by a full sync).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Flushed chains.
    pub chains: BTreeSet<String>,
    /// Affinity sets no rule uses.
    pub sets: BTreeSet<String>,
}

impl Leftovers {
    /// Leftovers beyond this many objects are deleted at the next incremental sync.
    pub const LIMIT: usize = 10_000;

    /// Number of stale objects.
    pub fn len(&self) -> usize {
        self.chains.len() + self.sets.len()
    }

    /// True when nothing is left over.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An ordered list of nft commands (nft syntax, one per line) applied as one atomic transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transaction {
    commands: Vec<String>,
    /// Elements sent over netlink after the commands, in a transaction of their own.
    elements: Arc<r8s_nft::elements::ElementBatch>,
}

impl Transaction {
    fn push(&mut self, cmd: String) {
        self.commands.push(cmd);
    }

    /// The commands, in order.
    pub fn commands(&self) -> &[String] {
        &self.commands
    }

    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.elements.is_empty()
    }

    /// Elements to send over netlink once the commands are applied (only
    /// [`Ruleset::initial_transaction`] has any).
    pub fn elements(&self) -> &Arc<r8s_nft::elements::ElementBatch> {
        &self.elements
    }

    /// The nft script (`nft -f` input).
    pub fn to_text(&self) -> String {
        let len = self.commands.iter().map(|c| c.len() + 1).sum();
        let mut s = String::with_capacity(len);
        for c in &self.commands {
            s.push_str(c);
            s.push('\n');
        }
        s
    }
}

impl Ruleset {
    fn add_chain(&self, name: &str) -> String {
        format!("add chain ip {} {name}", self.table)
    }

    fn flush_chain(&self, name: &str) -> String {
        format!("flush chain ip {} {name}", self.table)
    }

    /// `add rule` per rule (full sync: the cache is fetched for `delete table` anyway).
    fn add_rules(&self, tx: &mut Transaction, chain: &ChainSpec) {
        for stmts in &chain.rules {
            let mut s = format!("add rule ip {} {} ", self.table, chain.name);
            text::rule(stmts, &mut s);
            tx.push(s);
        }
    }

    /// `add chain NAME { rules }`: adds the rules without making nft fetch its chain cache.
    fn chain_block(&self, chain: &ChainSpec) -> Option<String> {
        if chain.rules.is_empty() {
            return None;
        }
        let mut s = format!("add chain ip {} {} {{ ", self.table, chain.name);
        for stmts in &chain.rules {
            text::rule(stmts, &mut s);
            s.push_str(" ; ");
        }
        s.push('}');
        Some(s)
    }

    fn add_set(&self, set: &AffinitySet) -> String {
        format!(
            "add set ip {} {} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {}s ; }}",
            self.table, set.name, set.timeout
        )
    }

    /// `add map NAME { type ... ; elements = { ... } ; }` per map: unlike `add element`, it
    /// needs no chain cache.
    fn add_elements<'a>(&self, tx: &mut Transaction, els: impl Iterator<Item = &'a MapElement>) {
        let mut by_map: BTreeMap<&str, String> = BTreeMap::new();
        for el in els {
            let s = by_map.entry(el.map).or_default();
            if !s.is_empty() {
                s.push_str(", ");
            }
            el.text(s);
        }
        for (map, elements) in by_map {
            tx.push(format!(
                "add map ip {} {map} {{ {} ; elements = {{ {elements} }} ; }}",
                self.table,
                map_type(map)
            ));
        }
    }

    /// `add set NAME { type ... ; elements = { P . P, ... } ; }`: no chain cache needed.
    fn add_hairpin<'a>(&self, tx: &mut Transaction, addrs: impl Iterator<Item = &'a Ipv4Addr>) {
        let mut elements = String::new();
        for a in addrs {
            if !elements.is_empty() {
                elements.push_str(", ");
            }
            let _ = write!(elements, "{a} . {a}");
        }
        if !elements.is_empty() {
            tx.push(format!(
                "add set ip {} {} {{ type {HAIRPIN_TYPE} ; elements = {{ {elements} }} ; }}",
                self.table,
                build::HAIRPIN
            ));
        }
    }

    fn delete_elements<'a>(&self, tx: &mut Transaction, els: impl Iterator<Item = &'a MapElement>) {
        let mut by_map: BTreeMap<&str, String> = BTreeMap::new();
        for el in els {
            let s = by_map.entry(el.map).or_default();
            if !s.is_empty() {
                s.push_str(", ");
            }
            text::expr(&el.key, s);
        }
        for (map, keys) in by_map {
            tx.push(format!(
                "delete element ip {} {map} {{ {keys} }}",
                self.table
            ));
        }
    }

    /// Number of rules in the table (for the `sync_proxy_rules_nftables` metric).
    pub fn rule_count(&self) -> usize {
        let base: usize = self.base.iter().map(|b| b.chain.rules.len()).sum::<usize>()
            + self.picks.len() * self.pick.rules_per_chain();
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
            + self.picks.len()
            + self
                .services
                .values()
                .map(|s| s.chains.len())
                .sum::<usize>()
    }

    /// One transaction that atomically replaces our table (and touches nothing else):
    /// `add table` (so the delete cannot fail), `delete table`, then the whole content.
    pub fn full_transaction(&self) -> Transaction {
        self.full(false)
    }

    /// Like [`Ruleset::full_transaction`], but with the elements of the maps and the hairpin
    /// set sent over netlink after the commands ([`Transaction::elements`]), which saves
    /// libnftables' parsing of each (most of a large sync). The table is complete only after
    /// both, so this is for a table that does not exist yet (nothing is replaced, nothing can
    /// be half-routed); it falls back to [`Ruleset::full_transaction`] for an element the
    /// netlink layout does not know.
    pub fn initial_transaction(&self) -> Transaction {
        self.full(true)
    }

    fn full(&self, netlink_elements: bool) -> Transaction {
        let t = &self.table;
        let mut tx = Transaction::default();
        for cmd in r8s_nft::delete_table_commands(t) {
            tx.push(cmd);
        }
        tx.push(format!("add table ip {t}"));
        for (name, ty) in MAPS {
            tx.push(format!("add map ip {t} {name} {{ {ty} ; }}"));
        }
        tx.push(format!(
            "add set ip {t} {} {{ type {HAIRPIN_TYPE} ; }}",
            build::HAIRPIN
        ));
        // Chains first, so that jumps and map elements can name any of them.
        for b in &self.base {
            match b.hook {
                Some((ty, hook, prio)) => tx.push(format!(
                    "add chain ip {t} {} {{ type {} hook {} priority {prio} ; policy accept ; }}",
                    b.chain.name,
                    chain_type(ty),
                    hook_name(hook)
                )),
                None => tx.push(self.add_chain(&b.chain.name)),
            }
        }
        for n in &self.picks {
            tx.push(self.add_chain(&build::pick_chain(*n)));
        }
        for svc in self.services.values() {
            for c in &svc.chains {
                tx.push(self.add_chain(&c.name));
            }
            for s in &svc.sets {
                tx.push(self.add_set(s));
            }
        }
        for b in &self.base {
            self.add_rules(&mut tx, &b.chain);
        }
        for n in &self.picks {
            self.add_rules(&mut tx, &self.pick.chain(*n));
        }
        for svc in self.services.values() {
            for c in &svc.chains {
                self.add_rules(&mut tx, c);
            }
        }
        let elements = self.services.values().flat_map(|s| s.elements.iter());
        let hairpin: BTreeSet<&Ipv4Addr> =
            self.services.values().flat_map(|s| &s.hairpin).collect();
        if netlink_elements {
            match self.element_batch(elements, hairpin.iter().copied()) {
                Some(batch) => tx.elements = Arc::new(batch),
                None => return self.full(false),
            }
        } else {
            self.add_elements(&mut tx, elements);
            self.add_hairpin(&mut tx, hairpin.into_iter());
        }
        tx
    }

    /// The elements in the kernel's layout, grouped by map; `None` if one cannot be encoded.
    fn element_batch<'a>(
        &self,
        elements: impl Iterator<Item = &'a MapElement>,
        hairpin: impl Iterator<Item = &'a Ipv4Addr>,
    ) -> Option<r8s_nft::elements::ElementBatch> {
        let mut by_map: BTreeMap<&str, r8s_nft::elements::SetElements> = BTreeMap::new();
        for el in elements {
            by_map
                .entry(el.map)
                .or_insert_with(|| r8s_nft::elements::SetElements {
                    set: el.map.to_string(),
                    elements: Vec::new(),
                })
                .elements
                .push(wire::element(el)?);
        }
        let mut sets: Vec<_> = by_map.into_values().collect();
        sets.push(wire::hairpin(hairpin));
        Some(r8s_nft::elements::ElementBatch {
            table: self.table.clone(),
            sets,
        })
    }

    /// The transaction that takes the kernel from `old` (last applied) to `self`, rewriting only
    /// the Services that changed and deleting what they no longer have. A different skeleton or
    /// table means a full replace.
    pub fn diff_transaction(&self, old: &Ruleset) -> Transaction {
        let mut leftovers = Leftovers::default();
        self.diff(old, &mut leftovers, true)
    }

    /// Like [`Ruleset::diff_transaction`], but chains and sets that became stale are only
    /// flushed and added to `leftovers`; they are deleted when this transaction must delete map
    /// elements anyway, or once there are more than [`Leftovers::LIMIT`]. Leftovers that the
    /// new ruleset uses again are taken back.
    pub fn incremental_transaction(&self, old: &Ruleset, leftovers: &mut Leftovers) -> Transaction {
        self.diff(old, leftovers, false)
    }

    fn diff(&self, old: &Ruleset, leftovers: &mut Leftovers, delete_now: bool) -> Transaction {
        if old.table != self.table || old.base != self.base || old.pick != self.pick {
            *leftovers = Leftovers::default();
            return self.full_transaction();
        }
        let empty = Arc::new(ServiceRules::default());
        let changed: Vec<(&ServiceRules, &ServiceRules)> = old
            .services
            .keys()
            .chain(self.services.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|k| {
                let before = old.services.get(k).unwrap_or(&empty);
                let after = self.services.get(k).unwrap_or(&empty);
                (!Arc::ptr_eq(before, after) && before != after)
                    .then_some((before.as_ref(), after.as_ref()))
            })
            .collect();
        self.changes(&changed, &old.picks, leftovers, delete_now)
    }

    /// The transaction that rewrites the given Services (`(before, after)`; a Service that is
    /// new or gone has an empty side) over this applied ruleset, without looking at any other
    /// Service: what an incremental sync costs does not depend on the size of the table. Stale
    /// chains and sets are handled as in [`Ruleset::incremental_transaction`]. The `pick-N`
    /// chains it creates are to be added to `self.picks` once it is applied
    /// ([`Ruleset::new_picks`]).
    pub fn update_transaction(
        &self,
        changed: &[(&ServiceRules, &ServiceRules)],
        leftovers: &mut Leftovers,
    ) -> Transaction {
        self.changes(changed, &self.picks, leftovers, false)
    }

    /// The `pick-N` chains the `after` sides need that `existing` does not have.
    pub fn new_picks<'a>(
        existing: &BTreeSet<u32>,
        after: impl IntoIterator<Item = &'a ServiceRules>,
    ) -> BTreeSet<u32> {
        after
            .into_iter()
            .flat_map(|r| r.picks.iter().copied())
            .filter(|n| !existing.contains(n))
            .collect()
    }

    fn changes(
        &self,
        changed: &[(&ServiceRules, &ServiceRules)],
        existing_picks: &BTreeSet<u32>,
        leftovers: &mut Leftovers,
        delete_now: bool,
    ) -> Transaction {
        let mut tx = Transaction::default();
        if changed.is_empty() {
            return tx;
        }
        // Elements: keep those that stay identical, delete the rest, add the new ones.
        let mut removed: Vec<&MapElement> = Vec::new();
        let mut added: Vec<&MapElement> = Vec::new();
        let mut after_keys: BTreeMap<(&str, String), &MapElement> = BTreeMap::new();
        for (_, after) in changed {
            for el in &after.elements {
                after_keys.insert((el.map, el.key_text()), el);
            }
        }
        let mut kept: BTreeSet<(&str, String)> = BTreeSet::new();
        for (before, _) in changed {
            for el in &before.elements {
                let k = (el.map, el.key_text());
                match after_keys.get(&k) {
                    Some(new) if new.value == el.value => {
                        kept.insert(k);
                    }
                    _ => removed.push(el),
                }
            }
        }
        for (k, el) in &after_keys {
            if !kept.contains(k) {
                added.push(el);
            }
        }
        // 1. Take the old map entries out (they point at chains about to change).
        self.delete_elements(&mut tx, removed.iter().copied());
        // 2. Create or empty every chain of the new version, and its sets.
        let mut new_chains: BTreeSet<&str> = BTreeSet::new();
        let mut new_sets: BTreeSet<&str> = BTreeSet::new();
        for (before, after) in changed {
            let existing: BTreeSet<&str> = before.chains.iter().map(|c| c.name.as_str()).collect();
            for c in &after.chains {
                new_chains.insert(&c.name);
                if existing.contains(c.name.as_str()) {
                    tx.push(self.flush_chain(&c.name));
                } else {
                    // A leftover of that name was flushed when it went stale: reuse it.
                    leftovers.chains.remove(&c.name);
                    tx.push(self.add_chain(&c.name));
                }
            }
            for s in &after.sets {
                new_sets.insert(&s.name);
                leftovers.sets.remove(&s.name);
                // Declared again even when it exists: nft resolves `@set` in the rules below
                // from this batch, without fetching its set cache.
                tx.push(self.add_set(s));
            }
        }
        // 3. Fill them, then point the maps at them.
        // Emptied first: a chain `existing_picks` does not know of may still be in the table. The
        // map is declared again first, so that nft resolves `@endpoints` from this batch
        // (without it, nft looks for the map in a set cache it did not fetch).
        let new_picks = Self::new_picks(existing_picks, changed.iter().map(|(_, a)| *a));
        if !new_picks.is_empty() {
            tx.push(format!(
                "add map ip {} {} {{ {} ; }}",
                self.table,
                build::ENDPOINTS,
                map_type(build::ENDPOINTS)
            ));
        }
        for n in new_picks {
            let pick = self.pick.chain(n);
            tx.push(self.add_chain(&pick.name));
            tx.push(self.flush_chain(&pick.name));
            if let Some(block) = self.chain_block(&pick) {
                tx.push(block);
            }
        }
        for (_, after) in changed {
            for c in &after.chains {
                if let Some(block) = self.chain_block(c) {
                    tx.push(block);
                }
            }
        }
        self.add_elements(&mut tx, added.into_iter());
        let mut hairpin: BTreeSet<&Ipv4Addr> = BTreeSet::new();
        for (before, after) in changed {
            hairpin.extend(
                after
                    .hairpin
                    .iter()
                    .filter(|a| before.hairpin.binary_search(a).is_err()),
            );
        }
        self.add_hairpin(&mut tx, hairpin.into_iter());
        // 4. What the new version no longer has: flush now (stale chains may jump to each other
        // and reference stale sets); delete now or later.
        let mut stale_chains = Vec::new();
        let mut stale_sets = Vec::new();
        for (before, _) in changed {
            stale_chains.extend(
                before
                    .chains
                    .iter()
                    .map(|c| c.name.as_str())
                    .filter(|c| !new_chains.contains(c)),
            );
            stale_sets.extend(
                before
                    .sets
                    .iter()
                    .map(|s| s.name.as_str())
                    .filter(|s| !new_sets.contains(s)),
            );
        }
        for c in &stale_chains {
            tx.push(self.flush_chain(c));
        }
        leftovers
            .chains
            .extend(stale_chains.iter().map(|c| c.to_string()));
        leftovers
            .sets
            .extend(stale_sets.iter().map(|s| s.to_string()));
        if delete_now || !removed.is_empty() || leftovers.len() > Leftovers::LIMIT {
            for c in &leftovers.chains {
                tx.push(format!("delete chain ip {} {c}", self.table));
            }
            for s in &leftovers.sets {
                tx.push(format!("delete set ip {} {s}", self.table));
            }
            *leftovers = Leftovers::default();
        }
        tx
    }

    /// The transaction that removes our table and its twin (used on shutdown with `--cleanup`
    /// and in tests).
    pub fn delete_table_transaction(table: &str) -> Transaction {
        let mut tx = Self::delete_one_table_transaction(table);
        tx.commands
            .extend(Self::delete_one_table_transaction(&twin_table(table)).commands);
        tx
    }

    /// The transaction that removes one table (whether it exists or not).
    pub fn delete_one_table_transaction(table: &str) -> Transaction {
        let mut tx = Transaction::default();
        for cmd in r8s_nft::delete_table_commands(table) {
            tx.push(cmd);
        }
        tx
    }
}

/// The other name our table takes: a full resync builds the new table beside the live one
/// under the name the live one does not have (both route alike while they coexist), then
/// deletes the live one, so that it can send its elements over netlink and still replace the
/// table without a moment of partial routing. The two names alternate.
pub fn twin_table(table: &str) -> String {
    format!("{table}-b")
}

fn chain_type(ty: NfChainType) -> &'static str {
    match ty {
        NfChainType::Filter => "filter",
        NfChainType::NAT => "nat",
        NfChainType::Route => "route",
    }
}

fn hook_name(hook: NfHook) -> &'static str {
    match hook {
        NfHook::Prerouting => "prerouting",
        NfHook::Input => "input",
        NfHook::Forward => "forward",
        NfHook::Output => "output",
        NfHook::Postrouting => "postrouting",
        NfHook::Ingress => "ingress",
        NfHook::Egress => "egress",
    }
}
