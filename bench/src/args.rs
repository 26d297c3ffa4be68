//! The command line: one flag table, validated before any load is sent.

use anyhow::bail;
use clap::{Parser, ValueEnum};

#[derive(Parser, Debug, Clone)]
// A later occurrence of a flag overrides an earlier one, so wrapper scripts can set defaults that
// the caller's own flags replace.
#[command(name = "sluice-load", version, about, args_override_self = true)]
pub struct Args {
    /// Address of the rate-limit service. Only loopback targets are accepted (127.0.0.0/8, ::1
    /// or `localhost`): this tool must never load a shared server. Defaults to
    /// http://127.0.0.1:8081 for gRPC and http://127.0.0.1:8080 for JSON.
    #[arg(long)]
    pub target: Option<String>,

    /// What to call: gRPC `ShouldRateLimit`, or the reference's `POST /json` over HTTP/1.1.
    #[arg(long, value_enum, default_value_t = Transport::Grpc)]
    pub transport: Transport,

    /// Closed loop (each worker waits for its answer before sending again) or open loop (a fixed
    /// `--rate`, latency measured from each request's intended send time).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,

    /// Open loop: requests per second, spread evenly over time.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: Option<u64>,

    /// Open loop: requests waiting for an answer at once, across all connections. A request due
    /// while this many are outstanding is not sent and counts as a `CLIENT_BACKLOG` error: the
    /// server has fallen behind the offered rate.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_outstanding: u64,

    /// Open loop: the pacer wakes at most once per this many microseconds and sends every
    /// request due by then in one go (`0`: it wakes for each request). A request's wait for its
    /// tick is send lag, inside its latency; the ticks spare the generator (and the server) a
    /// wake-up per request, which on a few shared cores is what bounds the rate it can keep.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub send_tick_us: u64,

    /// gRPC: batch the requests ready in one runtime pass into one write, as Envoy's codec
    /// does (`false`: one write per request, as a plain tonic client).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub coalesce_writes: bool,

    /// Worker threads of the generator's runtime (`0`: one per core). On a machine whose cores
    /// it shares with the server, fewer threads wake each other less and leave the server more.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub threads: u32,

    /// gRPC: HTTP/2 connections (one tonic channel each); requests are spread over them.
    /// JSON: ignored in open loop (every outstanding request holds an HTTP/1.1 connection).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,

    /// Closed loop: concurrent requests per connection; each is one worker.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub in_flight: u32,

    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub duration: u64,

    /// Hard cap on requests sent, warm-up included; the run stops at whichever bound comes first.
    #[arg(long, default_value_t = 50_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub max_requests: u64,

    /// Seconds of load before measuring starts (connections established, counters created).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub warmup: u64,

    /// Rate-limit domain sent with every request.
    #[arg(long, default_value = "edge")]
    pub domain: String,

    /// Key cardinality: each descriptor's value is drawn from this many distinct values.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub keys: u64,

    /// How values are drawn: uniformly, or Zipf-skewed (value 0 the hottest) as real tenants are.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub key_dist: KeyDist,

    /// Zipf exponent for `--key-dist zipf`: 0 is uniform, 1 the classic skew, higher is steeper.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,

    /// Descriptors per request (Envoy sends one per rate-limit action on the route).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub descriptors: u32,

    /// Entries of each descriptor: named after the rules of examples/config/quotas.yaml, or
    /// `generic` for `--entries` entries `key0=vN, key1=vN, ...` (bench/config/*.yaml).
    #[arg(long, value_enum, default_value_t = Shape::App)]
    pub shape: Shape,

    /// Entries per descriptor for `--shape generic`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub entries: u32,

    /// Request-level `hits_addend`; 0 leaves it unset, which the service reads as 1.
    #[arg(long, default_value_t = 1)]
    pub hits_addend: u32,

    /// Per-request timeout in milliseconds; a request that takes longer counts as an error.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub timeout_ms: u64,

    /// PRNG seed for descriptor values. Each worker derives its own stream from it.
    #[arg(long, default_value_t = 0x5eed_0f_5107)]
    pub seed: u64,

    /// Process id of the server under load: its CPU time over the measured window is reported,
    /// divided by the decisions it answered.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// A Redis the server counts in (loopback only): its command calls and CPU time over the
    /// measured window are reported per decision, from `INFO commandstats` and `INFO cpu`.
    /// Several `HOST:PORT`s separated by commas (every master of a Redis Cluster) are read at
    /// once and reported as their sum, with each node's share under `per_node`.
    #[arg(long)]
    pub redis: Option<String>,

    /// Accept an answer with no descriptor statuses at all (some servers, e.g. limitador, send
    /// only the overall code). Counted as `empty_statuses`; a non-empty list of the wrong length
    /// is still an error.
    #[arg(long)]
    pub allow_empty_statuses: bool,

    /// gRPC over TLS, trusting the CA certificates (PEM) in this file.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,

    /// The name the server's certificate is checked for, with `--tls-ca`.
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,

    /// A new gRPC connection (TCP, and TLS with `--tls-ca`) for every request: measures
    /// connection set-up, the handshake's cost, rather than steady-state calls.
    #[arg(long)]
    pub reconnect: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Grpc,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Closed,
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyDist {
    Uniform,
    Zipf,
}

/// What each descriptor of a request looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// `[app_id=app-N]`: the per-app default (`app_default`).
    App,
    /// `[org=org-N]`: the per-organisation hourly budget (`org_hourly`).
    Org,
    /// `[org=org-M, team=team-N]`: the nested per-team budget (`team_minute`).
    OrgTeam,
    /// `[path=/api/v1/items/N]`: the wildcard path rule (`api_v1_path`).
    Path,
    /// Cycles app, org, org-team, path across a request's descriptors, like a route with
    /// several rate-limit actions.
    Mixed,
    /// `[key0=vN, key1=vN, ...]` with `--entries` entries (the rules in bench/config/).
    Generic,
}

impl Args {
    /// Cross-flag checks clap cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (self.mode, self.rate) {
            (Mode::Open, None) => bail!("--mode open needs --rate"),
            (Mode::Closed, Some(_)) => bail!("--rate applies to --mode open only"),
            _ => {}
        }
        if self.mode == Mode::Closed && self.send_tick_us > 0 {
            bail!("--send-tick-us applies to --mode open only");
        }
        if self.entries != 1 && self.shape != Shape::Generic {
            bail!("--entries applies to --shape generic; the named shapes fix their own entries");
        }
        if !(0.0..=10.0).contains(&self.zipf_s) {
            bail!("--zipf-s must be between 0 and 10");
        }
        if self.domain.is_empty() {
            bail!("--domain must not be empty");
        }
        Ok(())
    }

    pub fn target_or_default(&self) -> &str {
        match (&self.target, self.transport) {
            (Some(t), _) => t,
            (None, Transport::Grpc) => "http://127.0.0.1:8081",
            (None, Transport::Json) => "http://127.0.0.1:8080",
        }
    }
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Json => "json",
        }
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
        }
    }
}

impl KeyDist {
    pub fn name(self) -> &'static str {
        match self {
            KeyDist::Uniform => "uniform",
            KeyDist::Zipf => "zipf",
        }
    }
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::App => "app",
            Shape::Org => "org",
            Shape::OrgTeam => "org-team",
            Shape::Path => "path",
            Shape::Mixed => "mixed",
            Shape::Generic => "generic",
        }
    }

    /// The concrete shape of descriptor `index` within a request.
    pub fn at(self, index: usize) -> Shape {
        const CYCLE: [Shape; 4] = [Shape::App, Shape::Org, Shape::OrgTeam, Shape::Path];
        match self {
            Shape::Mixed => CYCLE[index % CYCLE.len()],
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> anyhow::Result<Args> {
        let args =
            Args::try_parse_from(std::iter::once("sluice-load").chain(extra.iter().copied()))?;
        args.validate()?;
        Ok(args)
    }

    #[test]
    fn open_loop_needs_a_rate_and_closed_loop_refuses_one() {
        assert!(parse(&["--mode", "open"]).is_err());
        assert!(parse(&["--rate", "100"]).is_err());
        let open = parse(&["--mode", "open", "--rate", "100"]).expect("valid");
        assert_eq!(open.rate, Some(100));
    }

    #[test]
    fn ticks_and_threads_default_to_the_plain_schedule_and_are_bounded() {
        let open = parse(&["--mode", "open", "--rate", "100"]).expect("valid");
        assert_eq!((open.send_tick_us, open.threads), (0, 0));
        let set = parse(&[
            "--mode",
            "open",
            "--rate",
            "100",
            "--send-tick-us",
            "100",
            "--threads",
            "1",
        ])
        .expect("valid");
        assert_eq!((set.send_tick_us, set.threads), (100, 1));
        assert!(parse(&["--mode", "open", "--rate", "100", "--send-tick-us", "10001"]).is_err());
        assert!(parse(&["--threads", "257"]).is_err());
        assert!(
            parse(&["--send-tick-us", "100"]).is_err(),
            "closed loop has no schedule"
        );
    }

    #[test]
    fn entries_only_with_the_generic_shape() {
        assert!(parse(&["--entries", "3"]).is_err());
        assert!(parse(&["--shape", "generic", "--entries", "3"]).is_ok());
        assert!(parse(&["--zipf-s", "11"]).is_err());
    }

    #[test]
    fn default_target_follows_the_transport() {
        let grpc = parse(&[]).expect("valid");
        assert_eq!(grpc.target_or_default(), "http://127.0.0.1:8081");
        let json = parse(&["--transport", "json"]).expect("valid");
        assert_eq!(json.target_or_default(), "http://127.0.0.1:8080");
    }

    #[test]
    fn redis_takes_one_address_or_a_list() {
        let one = parse(&["--redis", "127.0.0.1:6379"]).expect("valid");
        assert_eq!(one.redis.as_deref(), Some("127.0.0.1:6379"));
        let list = parse(&["--redis", "127.0.0.1:7000,127.0.0.1:7001"]).expect("valid");
        let addrs = crate::redis_info::parse_addrs(list.redis.as_deref().unwrap()).expect("list");
        assert_eq!(addrs.len(), 2);
    }
}
