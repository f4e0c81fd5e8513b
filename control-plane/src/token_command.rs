//! `r8s-server token create|list|delete`: manages bootstrap tokens through
//! the API with the admin kubeconfig, as `kubeadm token` does.

use std::path::PathBuf;
use std::time::Duration;

use agent::bootstrap::token::{self, BootstrapToken};
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::auth::bootstrap_token::{TokenSecret, is_valid_extra_group};

/// Manage bootstrap tokens (like `kubeadm token`).
#[derive(Debug, Parser)]
#[command(
    name = "r8s-server token",
    about = "Manage bootstrap tokens, which nodes use to join the cluster (r8s-agent --token)"
)]
pub struct TokenFlags {
    /// The kubeconfig file to use when talking to the cluster.
    #[arg(
        long,
        global = true,
        env = "R8S_TOKEN_KUBECONFIG",
        default_value = "/etc/r8s/r8s.yaml"
    )]
    pub kubeconfig: PathBuf,

    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create bootstrap tokens on the server; prints the token.
    Create {
        /// The token to write; a random one when omitted (format
        /// "[a-z0-9]{6}.[a-z0-9]{16}").
        token: Option<String>,
        /// The duration before the token is automatically deleted (e.g.
        /// 1s, 2m, 3h). If set to '0', the token will never expire.
        #[arg(long, default_value = "24h0m0s")]
        ttl: String,
        /// A human friendly description of how this token is used.
        #[arg(long)]
        description: Option<String>,
        /// Describes the ways in which this token can be used.
        #[arg(long, value_delimiter = ',', default_value = "signing,authentication")]
        usages: Vec<String>,
        /// Extra groups that this token will authenticate as when used for
        /// authentication. Must match "\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z".
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Instead of printing only the token, print the full r8s-agent
        /// command line needed to join a node using the token.
        #[arg(long)]
        print_join_command: bool,
    },
    /// List bootstrap tokens on the server.
    List,
    /// Delete bootstrap tokens on the server (by token or token id).
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TokenCommandError {
    #[error("failed to load kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to build the API client")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error("invalid --ttl {0:?}: expected a duration such as 24h or 0")]
    Ttl(String),
    #[error("unknown usage {0:?}: valid usages are [signing authentication]")]
    Usage(String),
    #[error("--groups {0:?} must match \"\\Asystem:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9]\\z\"")]
    Group(String),
    #[error("token {0:?} is neither a token id nor a token")]
    TokenId(String),
    #[error("bootstrap token {0:?} not found")]
    NotFound(String),
    #[error("failed to {action}")]
    Api {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

async fn client(path: &std::path::Path) -> Result<kube::Client, TokenCommandError> {
    let kerr = |source| TokenCommandError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(kerr)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(kerr)?;
    kube::Client::try_from(config).map_err(TokenCommandError::Client)
}

/// Runs one `token` command, writing its output to stdout.
pub async fn run(flags: TokenFlags) -> Result<(), TokenCommandError> {
    let client = client(&flags.kubeconfig).await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), token::SECRET_NAMESPACE);
    match flags.command {
        TokenCommand::Create {
            token,
            ttl,
            description,
            usages,
            groups,
            print_join_command,
        } => {
            let ttl = crate::config::parse_duration(&ttl).ok_or(TokenCommandError::Ttl(ttl))?;
            let ts = new_token_secret(token.as_deref(), ttl, description, usages, groups)?;
            let obj: Secret = serde_json::from_value(crate::bootstrap::token_secret_object(&ts))
                .map_err(|e| TokenCommandError::Api {
                    action: "build the token secret",
                    source: kube::Error::SerdeError(e),
                })?;
            secrets
                .create(&PostParams::default(), &obj)
                .await
                .map_err(|source| TokenCommandError::Api {
                    action: "create the bootstrap token",
                    source,
                })?;
            if print_join_command {
                println!("{}", join_command(&client, &ts.token).await?);
            } else {
                println!("{}", ts.token);
            }
        }
        TokenCommand::List => {
            let list = secrets
                .list(&ListParams::default().fields(&format!("type={}", token::SECRET_TYPE)))
                .await
                .map_err(|source| TokenCommandError::Api {
                    action: "list bootstrap tokens",
                    source,
                })?;
            let tokens: Vec<TokenSecret> = list
                .items
                .iter()
                .filter_map(TokenSecret::from_secret)
                .collect();
            print!("{}", list_table(&tokens, chrono::Utc::now()));
        }
        TokenCommand::Delete { tokens } => {
            for t in tokens {
                let id = match t.parse::<BootstrapToken>() {
                    Ok(tok) => tok.id,
                    Err(_) if token::is_token_id(&t) => t.clone(),
                    Err(_) => return Err(TokenCommandError::TokenId(t)),
                };
                match secrets
                    .delete(
                        &format!("{}{id}", token::SECRET_PREFIX),
                        &DeleteParams::default(),
                    )
                    .await
                {
                    Ok(_) => println!("bootstrap token {id:?} deleted"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        return Err(TokenCommandError::NotFound(id));
                    }
                    Err(source) => {
                        return Err(TokenCommandError::Api {
                            action: "delete the bootstrap token",
                            source,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// The token secret `token create` writes.
pub fn new_token_secret(
    token: Option<&str>,
    ttl: Duration,
    description: Option<String>,
    usages: Vec<String>,
    groups: Vec<String>,
) -> Result<TokenSecret, TokenCommandError> {
    let token = match token {
        Some(t) => t.parse()?,
        None => BootstrapToken::generate(),
    };
    let mut usages: Vec<String> = usages
        .into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if let Some(u) = usages
        .iter()
        .find(|u| !matches!(u.as_str(), "signing" | "authentication"))
    {
        return Err(TokenCommandError::Usage(u.clone()));
    }
    usages.sort();
    usages.dedup();
    if let Some(g) = groups.iter().find(|g| !is_valid_extra_group(g)) {
        return Err(TokenCommandError::Group(g.clone()));
    }
    let expiration = (!ttl.is_zero())
        .then(|| chrono::Duration::from_std(ttl).ok())
        .flatten()
        .map(|d| chrono::Utc::now() + d);
    Ok(TokenSecret {
        token,
        expiration,
        description: description.unwrap_or_default(),
        usages,
        extra_groups: groups,
    })
}

/// `r8s-agent --server <cluster-info server> --token <t> --ca-cert-hash <pin>`.
async fn join_command(
    client: &kube::Client,
    token: &BootstrapToken,
) -> Result<String, TokenCommandError> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), token::CLUSTER_INFO_NAMESPACE)
        .get(token::CLUSTER_INFO_NAME)
        .await
        .map_err(|source| TokenCommandError::Api {
            action: "read the cluster-info config map",
            source,
        })?;
    let kubeconfig = cm
        .data
        .as_ref()
        .and_then(|d| d.get(token::KUBECONFIG_KEY))
        .cloned()
        .unwrap_or_default();
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).ok();
    let cluster = kc
        .as_ref()
        .and_then(|k| k.clusters.first())
        .and_then(|c| c.cluster.as_ref());
    let server = cluster.and_then(|c| c.server.clone()).unwrap_or_default();
    let hash = cluster
        .and_then(|c| c.certificate_authority_data.as_ref())
        .and_then(|b64| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .and_then(|pem| {
            x509_parser::pem::parse_x509_pem(&pem)
                .ok()
                .map(|(_, p)| p.contents)
        })
        .map(|der| token::ca_cert_hash(&der))
        .transpose()?
        .unwrap_or_default();
    Ok(format!(
        "r8s-agent --server {server} --token {token} --ca-cert-hash {hash}"
    ))
}

/// Go's `duration.ShortHumanDuration`.
fn short_human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86400 * 2 {
        format!("{}h", secs / 3600)
    } else if secs < 86400 * 365 * 8 {
        format!("{}d", secs / 86400)
    } else {
        format!("{}y", secs / (86400 * 365))
    }
}

/// `kubeadm token list`'s table (tabwriter: minwidth 10, padding 3).
pub fn list_table(tokens: &[TokenSecret], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut rows = vec![
        [
            "TOKEN",
            "TTL",
            "EXPIRES",
            "USAGES",
            "DESCRIPTION",
            "EXTRA GROUPS",
        ]
        .map(String::from),
    ];
    for t in tokens {
        let (ttl, expires) = match t.expiration {
            Some(e) => (
                short_human_duration(e - now),
                e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            None => ("<forever>".into(), "<never>".into()),
        };
        let none = |s: String| if s.is_empty() { "<none>".into() } else { s };
        rows.push([
            t.token.to_string(),
            ttl,
            expires,
            t.usages.join(","),
            none(t.description.clone()),
            none(t.extra_groups.join(",")),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len() + 3)
                .max()
                .unwrap_or(0)
                .max(10)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_validates_usages_groups_and_ttl() {
        let t = new_token_secret(
            Some("abcdef.0123456789abcdef"),
            Duration::from_secs(3600),
            None,
            vec!["authentication".into(), "signing".into()],
            vec![],
        )
        .unwrap();
        assert!(t.expiration.is_some());
        assert_eq!(t.usages, ["authentication", "signing"]);
        let forever = new_token_secret(None, Duration::ZERO, None, vec![], vec![]).unwrap();
        assert!(forever.expiration.is_none());
        assert!(new_token_secret(None, Duration::ZERO, None, vec!["x".into()], vec![]).is_err());
        assert!(
            new_token_secret(None, Duration::ZERO, None, vec![], vec!["admins".into()]).is_err()
        );
        assert!(new_token_secret(Some("bad"), Duration::ZERO, None, vec![], vec![]).is_err());
    }

    #[test]
    fn list_prints_kubeadms_table() {
        let now = chrono::Utc::now();
        let t = TokenSecret {
            token: "abcdef.0123456789abcdef".parse().unwrap(),
            expiration: Some(now + chrono::Duration::hours(23) + chrono::Duration::minutes(30)),
            description: String::new(),
            usages: vec!["authentication".into(), "signing".into()],
            extra_groups: vec![],
        };
        let t_clone = t.clone();
        let table = list_table(&[t], now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TOKEN                     TTL       EXPIRES"));
        assert!(lines[1].starts_with("abcdef.0123456789abcdef   23h       20"));
        assert!(lines[1].contains("authentication,signing   <none>"));
        // kubeadm's documented sample: a token that never expires.
        let forever = TokenSecret {
            expiration: None,
            description: "The default bootstrap token".into(),
            ..t_clone
        };
        let table = list_table(&[forever], now);
        assert!(table.contains("TOKEN                     TTL         EXPIRES   USAGES"));
        assert!(table.contains("0123456789abcdef   <forever>   <never>   authentication,signing   The default bootstrap token   <none>"));
    }
}
