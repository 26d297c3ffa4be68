//! The reference's stats, for deployments whose dashboards and alerts were built on
//! envoyproxy/ratelimit: the statsd push (its stat names, `EXTRA_TAGS`, plain or DogStatsD
//! tags) and a listener serving the Prometheus names of its default statsd_exporter mapping.
//! Both read Sluice's own metrics ([`crate::metrics::reference`]), on their own tasks: never on
//! the request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::limiter::RateLimiter;
use crate::log_throttle::LogThrottle;
use crate::metrics::reference;
use crate::settings::Statsd;
use crate::storage::AnyStore;

/// The largest datagram sent: fits an Ethernet MTU with IP and UDP headers, as statsd clients do.
const MAX_DATAGRAM: usize = 1432;

/// Pushes the reference's counters every `statsd.flush` until `stop` resolves, then once more so
/// the last interval's counts are not lost.
pub(super) async fn push_statsd(
    statsd: Statsd,
    limiter: Arc<RateLimiter<AnyStore>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut pusher = Pusher {
        statsd,
        socket: None,
        sent: HashMap::new(),
        warn: LogThrottle::new(Duration::from_secs(60)),
    };
    let mut stop = std::pin::pin!(stop);
    let mut ticks = tokio::time::interval(pusher.statsd.flush);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => pusher.push(&limiter.metrics().encode()).await,
            () = &mut stop => break,
        }
    }
    pusher.push(&limiter.metrics().encode()).await;
}

struct Pusher {
    statsd: Statsd,
    socket: Option<UdpSocket>,
    /// Each stat's total at the last push: statsd counters carry increments.
    sent: HashMap<String, u64>,
    warn: LogThrottle,
}

impl Pusher {
    async fn push(&mut self, exposition: &str) {
        let lines = self.lines(reference::statsd_counters(exposition));
        if lines.is_empty() {
            return;
        }
        let target = match tokio::net::lookup_host(&self.statsd.target).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                crate::warn_throttled!(self.warn, target = %self.statsd.target, error = %e, "cannot resolve the statsd server");
                return;
            }
        };
        let Some(target) = target else {
            return;
        };
        if self.socket.is_none() {
            let local: SocketAddr = if target.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            match UdpSocket::bind(local).await {
                Ok(socket) => self.socket = Some(socket),
                Err(e) => {
                    crate::warn_throttled!(self.warn, error = %e, "cannot open a UDP socket for statsd");
                    return;
                }
            }
        }
        let Some(socket) = &self.socket else {
            return;
        };
        for datagram in datagrams(&lines) {
            if let Err(e) = socket.send_to(datagram.as_bytes(), target).await {
                crate::warn_throttled!(self.warn, %target, error = %e, "cannot send stats to statsd");
                return;
            }
        }
    }

    /// The statsd lines for the counters that moved since the last push.
    fn lines(&mut self, counters: Vec<(String, u64)>) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, total) in counters {
            let before = self.sent.insert(name.clone(), total).unwrap_or(0);
            let delta = total.saturating_sub(before);
            if delta > 0 {
                lines.push(line(&name, delta, &self.statsd));
            }
        }
        lines
    }
}

/// One counter increment: DogStatsD tags after `|#`, or plain statsd's tags in the name as
/// `.__key=value`, as the reference's stats library writes them.
fn line(name: &str, delta: u64, statsd: &Statsd) -> String {
    let tags = &statsd.tags;
    if tags.is_empty() {
        return format!("{name}:{delta}|c");
    }
    if statsd.dogstatsd {
        let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{name}:{delta}|c|#{}", tags.join(","))
    } else {
        let mut sorted = tags.clone();
        sorted.sort();
        let suffix: String = sorted.iter().map(|(k, v)| format!(".__{k}={v}")).collect();
        format!("{name}{suffix}:{delta}|c")
    }
}

/// The lines packed into datagrams of at most [`MAX_DATAGRAM`] bytes, one per line break.
fn datagrams(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        match out.last_mut() {
            Some(last) if last.len() + 1 + line.len() <= MAX_DATAGRAM => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.clone()),
        }
    }
    out
}

/// Serves the reference-named Prometheus exposition at `path` on `addr` until `stop` resolves.
pub(super) async fn serve_reference_prometheus(
    listener: tokio::net::TcpListener,
    path: String,
    limiter: Arc<RateLimiter<AnyStore>>,
    limits: Arc<crate::listener::Limits>,
    stats: crate::listener::ListenerStats,
    stop: impl std::future::Future<Output = ()>,
) {
    let app = axum::Router::new().route(
        &path,
        axum::routing::get(move || {
            let limiter = Arc::clone(&limiter);
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    reference::prometheus_text(&limiter.metrics().encode()),
                )
            }
        }),
    );
    let acceptor = crate::listener::Acceptor::new(listener, "reference_metrics", limits, stats);
    crate::http::listener::serve(acceptor, app, 0, stop).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn statsd(dogstatsd: bool, tags: &[(&str, &str)]) -> Statsd {
        Statsd {
            target: "127.0.0.1:8125".into(),
            dogstatsd,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flush: Duration::from_secs(10),
        }
    }

    #[test]
    fn lines_carry_increments_and_tags_either_way() {
        let mut pusher = Pusher {
            statsd: statsd(false, &[("team", "edge"), ("env", "prod")]),
            socket: None,
            sent: HashMap::new(),
            warn: LogThrottle::new(Duration::from_secs(60)),
        };
        let first = pusher.lines(vec![("a.total_hits".into(), 5), ("a.over_limit".into(), 0)]);
        assert_eq!(first, ["a.total_hits.__env=prod.__team=edge:5|c"]);
        let second = pusher.lines(vec![("a.total_hits".into(), 7), ("a.over_limit".into(), 0)]);
        assert_eq!(second, ["a.total_hits.__env=prod.__team=edge:2|c"]);
        assert!(pusher.lines(vec![("a.total_hits".into(), 7)]).is_empty());
        let dog = statsd(true, &[("env", "prod")]);
        assert_eq!(line("a.total_hits", 3, &dog), "a.total_hits:3|c|#env:prod");
        assert_eq!(
            line("a.total_hits", 3, &statsd(true, &[])),
            "a.total_hits:3|c"
        );
    }

    #[test]
    fn datagrams_stay_under_the_mtu() {
        let lines: Vec<String> = (0..200)
            .map(|i| format!("ratelimit.service.rate_limit.d.key_{i}.total_hits:1|c"))
            .collect();
        let packed = datagrams(&lines);
        assert!(packed.len() > 1);
        assert!(packed.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let rejoined: Vec<&str> = packed.iter().flat_map(|d| d.split('\n')).collect();
        assert_eq!(rejoined, lines);
    }
}
