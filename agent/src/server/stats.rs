//! `/stats/summary`, `/metrics/resource` and `/metrics`: node CPU and
//! memory from /proc, pods and containers from CRI `ListContainerStats`,
//! in kubelet's Summary API (stats/v1alpha1) and Prometheus text shapes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use cri::client::CriClient;
use cri::proto;
use serde_json::{Value, json};

use super::lookup::{self, CONTAINER_NAME, LookupError, POD_NAME, POD_NAMESPACE, POD_UID};

/// USER_HZ: /proc/stat counts in 1/100 s on every Linux architecture.
const NANOS_PER_TICK: u64 = 10_000_000;

/// Node CPU and memory read from /proc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSample {
    pub cpu_core_nanos: u64,
    pub boot_time: i64,
    pub mem_total: u64,
    pub mem_free: u64,
    pub mem_available: u64,
    pub anon: u64,
}

/// Parses /proc/stat: busy CPU time (without idle and iowait) and btime.
pub fn parse_proc_stat(text: &str) -> (u64, i64) {
    let mut busy = 0;
    let mut btime = 0;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal
                busy = [0, 1, 2, 5, 6, 7]
                    .iter()
                    .filter_map(|i| v.get(*i))
                    .sum::<u64>()
                    * NANOS_PER_TICK;
            }
            Some("btime") => btime = f.next().and_then(|x| x.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
    (busy, btime)
}

/// Parses /proc/meminfo into bytes: (total, free, available, anon).
pub fn parse_meminfo(text: &str) -> (u64, u64, u64, u64) {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some(k), Some(v)) = (f.next(), f.next())
            && let Ok(v) = v.parse::<u64>()
        {
            m.insert(k.trim_end_matches(':').to_owned(), v * 1024);
        }
    }
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    (
        get("MemTotal"),
        get("MemFree"),
        get("MemAvailable"),
        get("AnonPages"),
    )
}

/// Reads the node sample now.
pub fn node_sample() -> NodeSample {
    let (cpu_core_nanos, boot_time) =
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
    let (mem_total, mem_free, mem_available, anon) =
        parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    NodeSample {
        cpu_core_nanos,
        boot_time,
        mem_total,
        mem_free,
        mem_available,
        anon,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn from_nanos(n: i64) -> DateTime<Utc> {
    Utc.timestamp_nanos(n)
}

/// CPU usage rate between two samples `(time nanos, core nanos)`.
pub fn nano_cores(prev: Option<(i64, u64)>, now: (i64, u64)) -> Option<u64> {
    let (t0, c0) = prev?;
    let dt = u64::try_from(now.0 - t0).ok().filter(|d| *d > 0)?;
    let dc = now.1.checked_sub(c0)?;
    Some(u64::try_from(u128::from(dc) * 1_000_000_000 / u128::from(dt)).unwrap_or(u64::MAX))
}

/// Container stats joined with their container's labels.
#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub started_at: i64,
    pub cpu: Option<proto::CpuUsage>,
    pub memory: Option<proto::MemoryUsage>,
    pub writable_layer: Option<proto::FilesystemUsage>,
}

/// Stats of every container from CRI, labelled with their pod.
pub async fn container_usage(cri: &CriClient) -> Result<Vec<ContainerUsage>, LookupError> {
    let containers = lookup::list_containers(cri).await?;
    let stats = cri
        .runtime
        .clone()
        .list_container_stats(proto::ListContainerStatsRequest { filter: None })
        .await
        .map_err(|source| LookupError::Cri {
            call: "ListContainerStats",
            source,
        })?
        .into_inner()
        .stats;
    let by_id: BTreeMap<&str, &proto::ContainerStats> = stats
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| (a.id.as_str(), s)))
        .collect();
    let running = proto::ContainerState::ContainerRunning as i32;
    Ok(containers
        .iter()
        .filter(|c| c.state == running)
        .map(|c| {
            let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            let s = by_id.get(c.id.as_str());
            ContainerUsage {
                namespace: label(POD_NAMESPACE),
                pod: label(POD_NAME),
                uid: label(POD_UID),
                container: label(CONTAINER_NAME),
                started_at: c.created_at,
                cpu: s.and_then(|s| s.cpu),
                memory: s.and_then(|s| s.memory),
                writable_layer: s.and_then(|s| s.writable_layer.clone()),
            }
        })
        .collect())
}

/// A container's `rootfs` (its writable layer) in the summary.
fn rootfs_json(layer: &proto::FilesystemUsage) -> Value {
    let mut v = json!({"time": rfc3339(from_nanos(layer.timestamp))});
    if let Some(b) = &layer.used_bytes {
        v["usedBytes"] = json!(b.value);
    }
    if let Some(i) = &layer.inodes_used {
        v["inodesUsed"] = json!(i.value);
    }
    v
}

fn cpu_json(cpu: &proto::CpuUsage) -> Value {
    let mut v = json!({"time": rfc3339(from_nanos(cpu.timestamp))});
    if let Some(n) = &cpu.usage_nano_cores {
        v["usageNanoCores"] = json!(n.value);
    }
    if let Some(n) = &cpu.usage_core_nano_seconds {
        v["usageCoreNanoSeconds"] = json!(n.value);
    }
    v
}

fn memory_json(m: &proto::MemoryUsage) -> Value {
    let mut v = json!({"time": rfc3339(from_nanos(m.timestamp))});
    for (key, field) in [
        ("availableBytes", &m.available_bytes),
        ("usageBytes", &m.usage_bytes),
        ("workingSetBytes", &m.working_set_bytes),
        ("rssBytes", &m.rss_bytes),
        ("pageFaults", &m.page_faults),
        ("majorPageFaults", &m.major_page_faults),
    ] {
        if let Some(x) = field {
            v[key] = json!(x.value);
        }
    }
    v
}

fn fs_json(root: &Path, now: DateTime<Utc>) -> Option<Value> {
    let s = nix::sys::statvfs::statvfs(root).ok()?;
    let frsize = s.fragment_size();
    let capacity = s.blocks() * frsize;
    let available = s.blocks_available() * frsize;
    let used = (s.blocks() - s.blocks_free()) * frsize;
    Some(json!({
        "time": rfc3339(now),
        "availableBytes": available,
        "capacityBytes": capacity,
        "usedBytes": used,
        "inodesFree": s.files_free(),
        "inodes": s.files(),
        "inodesUsed": s.files() - s.files_free(),
    }))
}

/// The node part of the summary.
pub fn node_json(
    node_name: &str,
    sample: &NodeSample,
    nano_cores: Option<u64>,
    root: &Path,
    now: DateTime<Utc>,
) -> Value {
    let mut cpu = json!({"time": rfc3339(now), "usageCoreNanoSeconds": sample.cpu_core_nanos});
    if let Some(n) = nano_cores {
        cpu["usageNanoCores"] = json!(n);
    }
    let usage = sample.mem_total.saturating_sub(sample.mem_free);
    let working_set = sample.mem_total.saturating_sub(sample.mem_available);
    let mut node = json!({
        "nodeName": node_name,
        "systemContainers": [],
        "startTime": rfc3339(Utc.timestamp_opt(sample.boot_time, 0).single().unwrap_or(now)),
        "cpu": cpu,
        "memory": {
            "time": rfc3339(now),
            "availableBytes": sample.mem_available,
            "usageBytes": usage,
            "workingSetBytes": working_set,
            "rssBytes": sample.anon,
            "pageFaults": 0,
            "majorPageFaults": 0,
        },
    });
    if let Some(fs) = fs_json(root, now) {
        node["fs"] = fs;
    }
    node
}

fn sum_u64(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    values.fold(None, |acc, v| match (acc, v) {
        (a, None) => a,
        (None, Some(v)) => Some(v),
        (Some(a), Some(v)) => Some(a + v),
    })
}

/// The pods part of the summary: containers grouped by pod uid; pod usage
/// is the sum of its containers'.
pub fn pods_json(usage: &[ContainerUsage], now: DateTime<Utc>) -> Vec<Value> {
    let mut pods: BTreeMap<(&str, &str, &str), Vec<&ContainerUsage>> = BTreeMap::new();
    for c in usage {
        pods.entry((&c.namespace, &c.pod, &c.uid))
            .or_default()
            .push(c);
    }
    pods.into_iter()
        .map(|((ns, name, uid), cs)| {
            let containers: Vec<Value> = cs
                .iter()
                .map(|c| {
                    let mut v = json!({"name": c.container, "startTime": rfc3339(from_nanos(c.started_at))});
                    if let Some(cpu) = &c.cpu {
                        v["cpu"] = cpu_json(cpu);
                    }
                    if let Some(m) = &c.memory {
                        v["memory"] = memory_json(m);
                    }
                    if let Some(l) = &c.writable_layer {
                        v["rootfs"] = rootfs_json(l);
                    }
                    v
                })
                .collect();
            let start = cs.iter().map(|c| c.started_at).min().unwrap_or_default();
            let cpu_of = |f: fn(&proto::CpuUsage) -> Option<u64>| {
                sum_u64(cs.iter().map(|c| c.cpu.as_ref().and_then(f)))
            };
            let mem_of = |f: fn(&proto::MemoryUsage) -> Option<u64>| {
                sum_u64(cs.iter().map(|c| c.memory.as_ref().and_then(f)))
            };
            let mut cpu = json!({"time": rfc3339(now)});
            if let Some(v) = cpu_of(|c| c.usage_nano_cores.as_ref().map(|x| x.value)) {
                cpu["usageNanoCores"] = json!(v);
            }
            if let Some(v) = cpu_of(|c| c.usage_core_nano_seconds.as_ref().map(|x| x.value)) {
                cpu["usageCoreNanoSeconds"] = json!(v);
            }
            let mut memory = json!({"time": rfc3339(now)});
            if let Some(v) = mem_of(|m| m.working_set_bytes.as_ref().map(|x| x.value)) {
                memory["workingSetBytes"] = json!(v);
            }
            if let Some(v) = mem_of(|m| m.usage_bytes.as_ref().map(|x| x.value)) {
                memory["usageBytes"] = json!(v);
            }
            if let Some(v) = mem_of(|m| m.rss_bytes.as_ref().map(|x| x.value)) {
                memory["rssBytes"] = json!(v);
            }
            json!({
                "podRef": {"name": name, "namespace": ns, "uid": uid},
                "startTime": rfc3339(from_nanos(start)),
                "containers": containers,
                "cpu": cpu,
                "memory": memory,
            })
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn secs(nanos: u64) -> f64 {
    // Precision loss is fine for a Prometheus float.
    #[allow(clippy::cast_precision_loss)]
    let s = nanos as f64 / 1e9;
    s
}

/// `/metrics/resource` as kubelet's resource metrics endpoint writes it.
pub fn resource_metrics(sample: &NodeSample, usage: &[ContainerUsage], now_ms: i64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64, i64)>| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value, ts) in rows {
            let _ = writeln!(out, "{name}{labels} {value} {ts}");
        }
    };
    let c_labels = |c: &ContainerUsage| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            escape(&c.container),
            escape(&c.namespace),
            escape(&c.pod)
        )
    };
    let ms = |nanos: i64| nanos / 1_000_000;
    family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
        usage
            .iter()
            .filter_map(|c| {
                let cpu = c.cpu.as_ref()?;
                let v = cpu.usage_core_nano_seconds.as_ref()?.value;
                Some((c_labels(c), secs(v), ms(cpu.timestamp)))
            })
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
        usage
            .iter()
            .filter_map(|c| {
                let m = c.memory.as_ref()?;
                #[allow(clippy::cast_precision_loss)]
                let v = m.working_set_bytes.as_ref()?.value as f64;
                Some((c_labels(c), v, ms(m.timestamp)))
            })
            .collect(),
    );
    family(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
        usage
            .iter()
            .map(|c| {
                #[allow(clippy::cast_precision_loss)]
                let v = c.started_at as f64 / 1e9;
                (c_labels(c), v, now_ms)
            })
            .collect(),
    );
    #[allow(clippy::cast_precision_loss)]
    let working_set = sample.mem_total.saturating_sub(sample.mem_available) as f64;
    family(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
        vec![(String::new(), secs(sample.cpu_core_nanos), now_ms)],
    );
    family(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
        vec![(String::new(), working_set, now_ms)],
    );
    let mut pods: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for c in usage {
        let e = pods
            .entry((c.namespace.clone(), c.pod.clone()))
            .or_default();
        e.0 += c
            .cpu
            .as_ref()
            .and_then(|x| x.usage_core_nano_seconds.as_ref())
            .map_or(0, |x| x.value);
        e.1 += c
            .memory
            .as_ref()
            .and_then(|x| x.working_set_bytes.as_ref())
            .map_or(0, |x| x.value);
    }
    let p_labels =
        |ns: &str, pod: &str| format!("{{namespace=\"{}\",pod=\"{}\"}}", escape(ns), escape(pod));
    family(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
        pods.iter()
            .map(|((ns, p), (cpu, _))| (p_labels(ns, p), secs(*cpu), now_ms))
            .collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
        pods.iter()
            .map(|((ns, p), (_, mem))| {
                #[allow(clippy::cast_precision_loss)]
                let v = *mem as f64;
                (p_labels(ns, p), v, now_ms)
            })
            .collect(),
    );
    let _ = writeln!(
        out,
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0"
    );
    out
}

/// `/metrics`: kubelet's basic gauges.
pub fn kubelet_metrics(
    node_name: &str,
    sandboxes: &[proto::PodSandbox],
    containers: &[proto::Container],
) -> String {
    let ready = proto::PodSandboxState::SandboxReady as i32;
    let running_pods = sandboxes.iter().filter(|s| s.state == ready).count();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for c in containers {
        let state = match proto::ContainerState::try_from(c.state) {
            Ok(proto::ContainerState::ContainerCreated) => "created",
            Ok(proto::ContainerState::ContainerRunning) => "running",
            Ok(proto::ContainerState::ContainerExited) => "exited",
            _ => "unknown",
        };
        *by_state.entry(state).or_default() += 1;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.\n# TYPE kubelet_node_name gauge\nkubelet_node_name{{node=\"{}\"}} 1",
        escape(node_name)
    );
    let _ = writeln!(
        out,
        "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox\n# TYPE kubelet_running_pods gauge\nkubelet_running_pods {running_pods}"
    );
    let _ = writeln!(
        out,
        "# HELP kubelet_running_containers [ALPHA] Number of containers currently running\n# TYPE kubelet_running_containers gauge"
    );
    for (state, n) in by_state {
        let _ = writeln!(
            out,
            "kubelet_running_containers{{container_state=\"{state}\"}} {n}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_busy_time_in_nanoseconds() {
        let (busy, btime) = parse_proc_stat(
            "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\nbtime 1700000000\n",
        );
        assert_eq!(busy, (100 + 5 + 50 + 3 + 2 + 1) * NANOS_PER_TICK);
        assert_eq!(btime, 1_700_000_000);
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let (total, free, avail, anon) = parse_meminfo(
            "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nAnonPages: 50 kB\n",
        );
        assert_eq!(
            (total, free, avail, anon),
            (1_024_000, 204_800, 614_400, 51_200)
        );
    }

    #[test]
    fn nano_cores_is_a_rate_between_samples() {
        assert_eq!(nano_cores(None, (10, 10)), None);
        assert_eq!(
            nano_cores(Some((0, 0)), (2_000_000_000, 1_000_000_000)),
            Some(500_000_000)
        );
    }

    #[test]
    fn resource_metrics_name_every_family() {
        let usage = vec![ContainerUsage {
            namespace: "d".into(),
            pod: "p".into(),
            uid: "u".into(),
            container: "c".into(),
            started_at: 1_000_000_000,
            cpu: Some(proto::CpuUsage {
                timestamp: 2_000_000,
                usage_core_nano_seconds: Some(proto::UInt64Value {
                    value: 1_500_000_000,
                }),
                ..Default::default()
            }),
            memory: None,
            writable_layer: None,
        }];
        let text = resource_metrics(&NodeSample::default(), &usage, 5);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"d\",pod=\"p\"} 1.5 2\n"
        ));
        assert!(text.contains("pod_cpu_usage_seconds_total{namespace=\"d\",pod=\"p\"} 1.5 5\n"));
        assert!(text.contains("node_memory_working_set_bytes 0 5\n"));
        let pods = pods_json(&usage, Utc::now());
        assert_eq!(pods[0]["podRef"]["uid"], "u");
        assert_eq!(pods[0]["cpu"]["usageCoreNanoSeconds"], 1_500_000_000u64);
    }
}
