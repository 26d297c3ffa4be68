//! Redis's own view of a run: command calls and CPU seconds from `INFO commandstats` and
//! `INFO cpu`, read when measuring starts and when it ends, so Redis work per decision can be
//! reported beside the server's. Given several nodes (every master of a Redis Cluster), their
//! counters are read at once and added up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisMark {
    /// Calls per command, every command but the `INFO` used to ask.
    pub calls: BTreeMap<String, u64>,
    /// `used_cpu_user + used_cpu_sys`: the whole server process.
    pub cpu_s: f64,
}

impl RedisMark {
    /// Several nodes' marks as one: calls per command and CPU seconds added up.
    pub fn sum<'a>(marks: impl IntoIterator<Item = &'a RedisMark>) -> RedisMark {
        let mut total = RedisMark::default();
        for mark in marks {
            for (name, &calls) in &mark.calls {
                *total.calls.entry(name.clone()).or_default() += calls;
            }
            total.cpu_s += mark.cpu_s;
        }
        total
    }
}

/// `--redis`: `HOST:PORT` (port 6379 when left out), or several separated by commas, such as
/// every master of a Redis Cluster. Each must be loopback, and none may repeat: it would be
/// counted twice.
pub fn parse_addrs(raw: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for item in raw.split(',').map(str::trim) {
        if item.is_empty() {
            bail!("--redis {raw:?} has an empty address");
        }
        let addr = crate::target::loopback_target(&format!("http://{item}"), 6379)
            .with_context(|| format!("--redis address {item:?}"))?;
        if addrs.contains(&addr) {
            bail!("--redis names {addr} twice; its work would be counted twice");
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

/// Every node's mark, asked at once so that the nodes' windows line up.
pub async fn mark_all(addrs: &[SocketAddr]) -> anyhow::Result<Vec<RedisMark>> {
    futures::future::try_join_all(addrs.iter().map(|&addr| mark(addr))).await
}

/// Reads both sections over one short-lived connection.
pub async fn mark(addr: SocketAddr) -> anyhow::Result<RedisMark> {
    let ask = async {
        let mut conn = BufReader::new(TcpStream::connect(addr).await?);
        let mut text = String::new();
        for section in ["commandstats", "cpu"] {
            let command = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
            conn.get_mut().write_all(command.as_bytes()).await?;
            text.push_str(&read_bulk(&mut conn).await?);
        }
        anyhow::Ok(parse(&text))
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .with_context(|| format!("Redis at {addr} did not answer INFO within 2s"))?
        .with_context(|| format!("asking Redis at {addr} for INFO"))
}

/// One RESP bulk string (`$<len>\r\n<bytes>\r\n`).
async fn read_bulk(conn: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut header = String::new();
    conn.read_line(&mut header).await?;
    let Some(len) = header.trim_end().strip_prefix('$') else {
        bail!("unexpected INFO reply: {}", header.trim_end());
    };
    let len: usize = len.parse().context("bulk length")?;
    let mut body = vec![0; len + 2];
    conn.read_exact(&mut body).await?;
    body.truncate(len);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn parse(text: &str) -> RedisMark {
    let mut mark = RedisMark::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|c| c.parse().ok());
            if let (Some(calls), false) = (calls, name == "info") {
                mark.calls.insert(name.to_owned(), calls);
            }
        } else if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            mark.cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    mark
}

/// Per-decision figures between two marks.
pub fn report(before: &RedisMark, after: &RedisMark, decisions: u64) -> serde_json::Value {
    let per = |x: f64| {
        if decisions == 0 {
            serde_json::Value::Null
        } else {
            ((x / decisions as f64 * 1000.0).round() / 1000.0).into()
        }
    };
    let calls: BTreeMap<&str, u64> = after
        .calls
        .iter()
        .map(|(name, &n)| {
            let was = before.calls.get(name).copied().unwrap_or(0);
            (name.as_str(), n.saturating_sub(was))
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    let total: u64 = calls.values().sum();
    let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
    let calls_per_decision: BTreeMap<&str, serde_json::Value> = calls
        .iter()
        .map(|(&name, &n)| (name, per(n as f64)))
        .collect();
    // Redis counts the commands a script runs as calls too: an EVALSHA that runs GET and INCRBY
    // shows as three calls for one round trip. The per-command split tells them apart.
    serde_json::json!({
        "commands": total,
        "commands_per_decision": per(total as f64),
        "calls": calls,
        "calls_per_decision": calls_per_decision,
        "cpu_s": (cpu_s * 1000.0).round() / 1000.0,
        "cpu_us_per_decision": per(cpu_s * 1e6),
    })
}

/// [`report`] over the sum of every node's marks. With more than one node it also carries
/// `nodes` and `per_node` (each node's address, commands and CPU), which shows how evenly the
/// slots spread the work; with one node the object is exactly [`report`]'s.
pub fn report_nodes(
    addrs: &[SocketAddr],
    before: &[RedisMark],
    after: &[RedisMark],
    decisions: u64,
) -> serde_json::Value {
    let mut out = report(&RedisMark::sum(before), &RedisMark::sum(after), decisions);
    if addrs.len() > 1 {
        let per_node: Vec<serde_json::Value> = addrs
            .iter()
            .zip(before.iter().zip(after))
            .map(|(addr, (a, b))| {
                let node = report(a, b, decisions);
                serde_json::json!({
                    "addr": addr.to_string(),
                    "commands": node["commands"],
                    "cpu_s": node["cpu_s"],
                    "cpu_us_per_decision": node["cpu_us_per_decision"],
                })
            })
            .collect();
        out["nodes"] = addrs.len().into();
        out["per_node"] = per_node.into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=1500,usec=9000,usec_per_call=6.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=7,usec=300,usec_per_call=42.86,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_ping:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n\
        # CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:0.750000\r\n\
        used_cpu_sys_children:0.000000\r\nused_cpu_sys_main_thread:1.200000\r\n";

    #[test]
    fn parses_calls_and_cpu_leaving_info_out() {
        let mark = parse(INFO);
        assert_eq!(mark.calls.get("evalsha"), Some(&1500));
        assert_eq!(mark.calls.get("ping"), Some(&2));
        assert!(!mark.calls.contains_key("info"));
        assert!((mark.cpu_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn reports_the_difference_per_decision() {
        let before = parse(INFO);
        let mut after = before.clone();
        *after.calls.entry("evalsha".into()).or_default() += 1000;
        after.calls.insert("incrby".into(), 500);
        after.cpu_s += 0.01;
        let r = report(&before, &after, 1000);
        assert_eq!(r["commands"], 1500);
        assert_eq!(r["commands_per_decision"], 1.5);
        assert_eq!(r["calls"]["evalsha"], 1000);
        assert_eq!(r["calls_per_decision"]["incrby"], 0.5);
        assert!(r["calls"].get("ping").is_none());
        assert_eq!(r["cpu_us_per_decision"], 10.0);
    }

    #[test]
    fn parses_one_address_or_a_comma_separated_list() {
        let one = parse_addrs("127.0.0.1:7000").expect("one");
        assert_eq!(one, ["127.0.0.1:7000".parse().unwrap()]);
        assert_eq!(
            parse_addrs("localhost").expect("default port")[0].to_string(),
            "127.0.0.1:6379"
        );
        let three = parse_addrs("127.0.0.1:7000, 127.0.0.1:7001,[::1]:7002").expect("three");
        let three: Vec<String> = three.iter().map(ToString::to_string).collect();
        assert_eq!(three, ["127.0.0.1:7000", "127.0.0.1:7001", "[::1]:7002"]);
        for raw in [
            "",
            "127.0.0.1:7000,",
            "127.0.0.1:7000,,127.0.0.1:7001",
            "127.0.0.1:7000,10.0.0.1:7001",
            "127.0.0.1:7000,example.com:7001",
            "127.0.0.1:7000,127.0.0.1:7000",
            "127.0.0.1:7000,localhost:7000",
        ] {
            assert!(parse_addrs(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn sums_the_nodes_before_reporting() {
        let a = parse(INFO);
        let mut b = RedisMark::default();
        b.calls.insert("evalsha".into(), 500);
        b.calls.insert("hset".into(), 20);
        b.cpu_s = 0.5;
        let sum = RedisMark::sum([&a, &b]);
        assert_eq!(sum.calls.get("evalsha"), Some(&2000));
        assert_eq!(sum.calls.get("hset"), Some(&20));
        assert_eq!(sum.calls.get("ping"), Some(&2));
        assert!((sum.cpu_s - 2.5).abs() < 1e-9);
        assert_eq!(RedisMark::sum([]), RedisMark::default());
    }

    #[test]
    fn reports_several_nodes_as_their_sum_with_each_share() {
        let addrs = parse_addrs("127.0.0.1:7000,127.0.0.1:7001").expect("two");
        let before = [parse(INFO), RedisMark::default()];
        let mut after = before.clone();
        *after[0].calls.entry("evalsha".into()).or_default() += 600;
        after[0].cpu_s += 0.006;
        after[1].calls.insert("evalsha".into(), 400);
        after[1].calls.insert("hset".into(), 400);
        after[1].cpu_s += 0.004;
        let r = report_nodes(&addrs, &before, &after, 1000);
        assert_eq!(r["commands"], 1400);
        assert_eq!(r["calls"]["evalsha"], 1000);
        assert_eq!(r["calls_per_decision"]["evalsha"], 1.0);
        assert_eq!(r["calls_per_decision"]["hset"], 0.4);
        assert_eq!(r["cpu_us_per_decision"], 10.0);
        assert_eq!(r["nodes"], 2);
        assert_eq!(r["per_node"][0]["addr"], "127.0.0.1:7000");
        assert_eq!(r["per_node"][0]["commands"], 600);
        assert_eq!(r["per_node"][1]["commands"], 800);
        assert_eq!(r["per_node"][1]["cpu_us_per_decision"], 4.0);
    }

    #[test]
    fn one_node_reports_exactly_as_before() {
        let addrs = parse_addrs("127.0.0.1:7000").expect("one");
        let before = parse(INFO);
        let mut after = before.clone();
        *after.calls.entry("evalsha".into()).or_default() += 1000;
        after.cpu_s += 0.01;
        let one_node = report_nodes(
            &addrs,
            std::slice::from_ref(&before),
            std::slice::from_ref(&after),
            1000,
        );
        assert_eq!(one_node, report(&before, &after, 1000));
        assert!(one_node.get("per_node").is_none());
    }
}
