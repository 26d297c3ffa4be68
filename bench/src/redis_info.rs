//! Redis's own view of a run: command calls and CPU seconds from `INFO commandstats` and
//! `INFO cpu`, read when measuring starts and when it ends, so Redis work per decision can be
//! reported beside the server's.

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
}
