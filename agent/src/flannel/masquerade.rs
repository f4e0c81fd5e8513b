//! Masquerade of pod traffic that leaves the cluster network, as flannel's `ipMasq` (which
//! k3s turns on): pods keep their own address towards other pods, and appear as the node
//! towards everything else. One nftables table of the agent's own (`<bridge>-masq`),
//! replaced whole in one transaction on every sync.
use netproxy::model::Ipv4Cidr;
use r8s_nft::{LibNftables, NftError};

/// The service proxy's masquerade mark (kube-proxy's `0x4000`): such traffic is the proxy's.
const PROXY_MASQ_MARK: u32 = 0x4000;

/// The table of the agent whose pods hang off `bridge`.
pub fn table_name(bridge: &str) -> String {
    format!("{bridge}-masq")
}

/// The transaction that leaves `table` with flannel's rules for a node whose pods are in
/// `own` (`None`: not known yet, only the rules that do not need it).
pub fn render(table: &str, cluster: Ipv4Cidr, own: Option<Ipv4Cidr>) -> String {
    let mut rules = vec![
        format!("meta mark & {PROXY_MASQ_MARK:#x} == {PROXY_MASQ_MARK:#x} return"),
        format!("ip saddr {cluster} ip daddr {cluster} return"),
    ];
    if let Some(own) = own {
        // From outside to this node's own pods: the client's address is kept.
        rules.push(format!("ip saddr != {cluster} ip daddr {own} return"));
    }
    rules.push(format!(
        "ip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random"
    ));
    // From outside to another node's pods through this one.
    rules.push(format!(
        "ip saddr != {cluster} ip daddr {cluster} masquerade fully-random"
    ));
    let body: String = rules.iter().map(|r| format!("    {r}\n")).collect();
    format!(
        "{}table ip {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{body}  }}\n}}\n",
        delete(table)
    )
}

fn delete(table: &str) -> String {
    r8s_nft::delete_table_commands(table).join("\n") + "\n"
}

/// Removes `table` if it is there (backend `none`: another plugin owns the network).
pub fn remove(nft: &LibNftables, table: &str) -> Result<(), NftError> {
    nft.run(&delete(table)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_keep_their_address_inside_the_cluster_and_are_masqueraded_outside() {
        let script = render(
            "r8s0-masq",
            "10.42.0.0/16".parse().unwrap(),
            Some("10.42.3.0/24".parse().unwrap()),
        );
        let rules: Vec<&str> = script
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("type nat hook postrouting"))
            .skip(1)
            .take_while(|l| *l != "}")
            .collect();
        assert_eq!(
            rules,
            [
                "meta mark & 0x4000 == 0x4000 return",
                "ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return",
                "ip saddr != 10.42.0.0/16 ip daddr 10.42.3.0/24 return",
                "ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
                "ip saddr != 10.42.0.0/16 ip daddr 10.42.0.0/16 masquerade fully-random",
            ]
        );
        assert!(script.starts_with(
            "add table ip r8s0-masq\ndelete table ip r8s0-masq\ntable ip r8s0-masq {"
        ));
    }

    #[test]
    fn without_a_pod_cidr_the_rule_for_own_pods_is_left_out() {
        let script = render("t", "10.42.0.0/16".parse().unwrap(), None);
        assert!(!script.contains("10.42.0.0/16 ip daddr 10.42.0.0/24 return"));
        assert!(script.contains("masquerade fully-random"));
    }
}
