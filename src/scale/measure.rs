//! What the scale probe reads around a phase, all from outside the controller: CPU time and peak
//! RSS of processes (`/proc`), the controller's EC2 calls (its `/metrics`), and the apiserver
//! writes made by the controller's user (the apiserver's audit log: `apiserver_request_total`
//! has no per-user label, so the audit log is the only per-user split the apiserver offers).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// The build this binary is, as the reports say it: scale.sh runs the controllers and the probe
/// from one binary, so the probe's own build is theirs.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// User + system CPU seconds of a process so far, `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: the fields after it start past its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Peak resident set (VmHWM) of a process over its life, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `winipam_ec2_requests_total` summed by operation, from one `/metrics` page.
pub fn ec2_calls(page: &str) -> BTreeMap<String, u64> {
    counter_by(page, "winipam_ec2_requests_total", "operation")
}

/// `winipam_status_writes_total` by why each write went when it did, from one `/metrics` page.
pub fn status_writes(page: &str) -> BTreeMap<String, u64> {
    counter_by(page, "winipam_status_writes_total", "why")
}

/// The cumulative buckets of `winipam_pod_ip_assign_seconds` (pod seen bound -> annotation
/// written, the controller's own share of the wait), by `le`, from one `/metrics` page.
pub fn assign_buckets(page: &str) -> BTreeMap<String, u64> {
    counter_by(page, "winipam_pod_ip_assign_seconds_bucket", "le")
}

/// The `q` quantile of cumulative histogram buckets keyed by `le` (as `assign_buckets`, or a
/// difference of two), as the upper bound of the bucket it falls in, like Prometheus's
/// `histogram_quantile` without the interpolation: a bound that holds. `None`: no observation.
pub fn quantile_at_most(buckets: &BTreeMap<String, u64>, q: f64) -> Option<f64> {
    let mut bounds: Vec<(f64, u64)> = buckets
        .iter()
        .filter_map(|(le, n)| {
            let le = match le.as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().ok()?,
            };
            Some((le, *n))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = bounds.iter().map(|(_, n)| *n).max().filter(|n| *n > 0)? as f64;
    bounds
        .into_iter()
        .find(|(_, n)| *n as f64 >= q * total)
        .map(|(le, _)| le)
}

/// The counter `metric` of one `/metrics` page, summed by the value of its label `label`.
fn counter_by(page: &str, metric: &str, label: &str) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    let (opening, key) = (format!("{metric}{{"), format!("{label}=\""));
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(opening.as_str()) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some(value_of) = labels.split(',').find_map(|l| {
            l.strip_prefix(key.as_str())
                .and_then(|v| v.strip_suffix('"'))
        }) else {
            continue;
        };
        let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *by.entry(value_of.to_owned()).or_insert(0) += count;
    }
    by
}

/// Addresses on the nodes' ENIs by the controller's own gauges: `winipam_node_ips` of the
/// states used, free and cooling, summed over nodes (pending ones are not on an ENI yet).
pub fn held_addresses(page: &str) -> u64 {
    page.lines()
        .filter_map(|line| line.strip_prefix("winipam_node_ips{"))
        .filter_map(|rest| rest.rsplit_once('}'))
        .filter(|(labels, _)| {
            ["used", "free", "cooling"]
                .iter()
                .any(|s| labels.contains(&format!("state=\"{s}\"")))
        })
        .map(|(_, value)| value.trim().parse::<f64>().unwrap_or(0.0) as u64)
        .sum()
}

/// GET `/metrics` of a controller (plain HTTP/1.0, the page is small).
pub async fn scrape(addr: SocketAddr) -> Result<String, String> {
    get(addr, "/metrics").await
}

/// The controller at `addr` holds the Lease and has rebuilt every pool: `winipam_leader` is 1
/// and `/readyz` answers 200 (a leader is unready until every node it took over is built).
pub async fn leads_and_ready(addr: SocketAddr) -> bool {
    let leads = scrape(addr)
        .await
        .is_ok_and(|page| page.lines().any(|l| l.trim() == "winipam_leader 1"));
    leads
        && get(addr, "/readyz")
            .await
            .is_ok_and(|answer| answer.split_whitespace().nth(1) == Some("200"))
}

/// GET `path` of a controller: the whole answer, status line and headers included.
async fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    match tokio::time::timeout(Duration::from_secs(5), fetch).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(err)) => Err(format!("GET http://{addr}{path}: {err}")),
        Err(_) => Err(format!("GET http://{addr}{path}: timed out")),
    }
}

/// Counts per key (difference of two counts), keeping the keys that moved.
pub fn delta(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Where an audit log ends now (the next phase counts from there).
pub fn audit_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Writes of `user` recorded in the audit log after `offset`, by `verb resource[/subresource]`.
/// Only the ResponseComplete (or Panic) stage is counted: one line per request.
pub fn audit_writes(path: &Path, offset: u64, user: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("seek {}: {e}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut writes = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let stage = event["stage"].as_str().unwrap_or("");
        if event["user"]["username"].as_str() != Some(user)
            || !matches!(stage, "ResponseComplete" | "Panic")
        {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or("");
        if !matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) {
            continue;
        }
        let resource = event["objectRef"]["resource"].as_str().unwrap_or("?");
        let key = match event["objectRef"]["subresource"].as_str() {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        *writes.entry(key).or_insert(0) += 1;
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_calls_sum_outcomes_by_operation() {
        let page = "# HELP x\n\
            winipam_ec2_requests_total{operation=\"AssignPrivateIpAddresses\",outcome=\"success\"} 4\n\
            winipam_ec2_requests_total{operation=\"AssignPrivateIpAddresses\",outcome=\"throttled\"} 2\n\
            winipam_ec2_requests_total{operation=\"DescribeInstances\",outcome=\"success\"} 1\n\
            winipam_ec2_request_seconds_count{operation=\"DescribeInstances\"} 1\n";
        let calls = ec2_calls(page);
        assert_eq!(calls.get("AssignPrivateIpAddresses"), Some(&6));
        assert_eq!(calls.get("DescribeInstances"), Some(&1));
        assert_eq!(calls.len(), 2);
        let page = "winipam_status_writes_total{why=\"coalesced\"} 7\n\
            winipam_status_writes_total{why=\"refill\"} 3\n\
            winipam_status_writes_totals{why=\"refill\"} 9\n";
        let writes = status_writes(page);
        assert_eq!(writes.get("coalesced"), Some(&7));
        assert_eq!(
            writes.get("refill"),
            Some(&3),
            "another metric's name left out"
        );
    }

    #[test]
    fn the_assign_quantiles_of_a_phase_are_the_bounds_of_the_buckets_they_fall_in() {
        let page = |counts: [u64; 4]| {
            format!(
                "winipam_pod_ip_assign_seconds_bucket{{le=\"0.01\"}} {}\n\
                 winipam_pod_ip_assign_seconds_bucket{{le=\"0.05\"}} {}\n\
                 winipam_pod_ip_assign_seconds_bucket{{le=\"1\"}} {}\n\
                 winipam_pod_ip_assign_seconds_bucket{{le=\"+Inf\"}} {}\n\
                 winipam_pod_ip_assign_seconds_count {}\n",
                counts[0], counts[1], counts[2], counts[3], counts[3]
            )
        };
        // Before the phase: 50 slow pods; during it, 98 more under 10 ms, one under 50 ms
        // and one under a second. The phase's own p99 falls in the 50 ms bucket.
        let before = assign_buckets(&page([0, 0, 0, 50]));
        let after = assign_buckets(&page([98, 99, 100, 150]));
        let phase = delta(&after, &before);
        assert_eq!(quantile_at_most(&phase, 0.5), Some(0.01));
        assert_eq!(quantile_at_most(&phase, 0.99), Some(0.05));
        assert_eq!(quantile_at_most(&phase, 1.0), Some(1.0));
        // The whole life, slow pods included: the p99 is past the last bound.
        assert_eq!(quantile_at_most(&after, 0.99), Some(f64::INFINITY));
        assert_eq!(quantile_at_most(&delta(&after, &after), 0.5), None);
    }

    #[test]
    fn held_addresses_sum_the_states_on_the_enis() {
        let page = "winipam_node_ips{node=\"a\",state=\"used\"} 3\n\
            winipam_node_ips{node=\"a\",state=\"free\"} 10\n\
            winipam_node_ips{node=\"b\",state=\"cooling\"} 2\n\
            winipam_node_ips{node=\"b\",state=\"pending\"} 7\n\
            winipam_node_capacity_ips{node=\"a\"} 224\n";
        assert_eq!(held_addresses(page), 15);
    }

    #[test]
    fn audit_writes_count_one_line_per_request_of_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let lines = [
            r#"{"stage":"ResponseComplete","verb":"patch","user":{"username":"c"},"objectRef":{"resource":"pods"}}"#,
            r#"{"stage":"ResponseStarted","verb":"patch","user":{"username":"c"},"objectRef":{"resource":"pods"}}"#,
            r#"{"stage":"ResponseComplete","verb":"update","user":{"username":"c"},"objectRef":{"resource":"nodeaddresspools","subresource":"status"}}"#,
            r#"{"stage":"ResponseComplete","verb":"get","user":{"username":"c"},"objectRef":{"resource":"pods"}}"#,
            r#"{"stage":"ResponseComplete","verb":"patch","user":{"username":"other"},"objectRef":{"resource":"pods"}}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let writes = audit_writes(&path, 0, "c").unwrap();
        assert_eq!(writes.get("patch pods"), Some(&1));
        assert_eq!(writes.get("update nodeaddresspools/status"), Some(&1));
        assert_eq!(writes.values().sum::<u64>(), 2);
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(peak_rss_mib(std::process::id()).unwrap() > 0.0);
    }
}
