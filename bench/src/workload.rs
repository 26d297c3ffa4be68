//! What the load looks like: descriptor values from a seeded PRNG (uniform or Zipf-skewed), shaped
//! into descriptors, encoded for gRPC or for `POST /json`.
//!
//! Two runs with the same flags and seed send the same key sequence per worker, so they hit the
//! same counters.

use bytes::Bytes;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;

use crate::args::{Args, KeyDist, Shape, Transport};

/// xorshift64*: tiny, fast and deterministic, which is all key selection needs.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeds through splitmix64 so that neighbouring worker ids give unrelated streams (and a zero
    /// seed, which xorshift cannot leave, is impossible).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut z = seed
            .wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (multiply-shift: no division, bias negligible for these `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A float in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Zipf over ranks `1..=n` with exponent `s` (P(k) ∝ k^-s), by rejection-inversion (Hörmann and
/// Derflinger, 1996): constant time and memory per draw whatever `n`, so 100M keys cost nothing to
/// set up. The continuous envelope is `h(x) = x^-s`, with `H` its integral and `H⁻¹` the inverse;
/// a draw inverts a uniform point under the envelope and accepts the rounded rank unless it
/// falls in the sliver between the envelope and the step function.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_first: f64,
    h_last: f64,
    squeeze: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Self {
        let mut z = Zipf {
            n: n.max(1) as f64,
            s,
            h_first: 0.0,
            h_last: 0.0,
            squeeze: 0.0,
        };
        z.h_first = z.big_h(1.5) - 1.0;
        z.h_last = z.big_h(z.n + 0.5);
        z.squeeze = 2.0 - z.big_h_inv(z.big_h(2.5) - z.h(2.0));
        z
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    /// `∫₁ˣ t^-s dt`, written so that it stays exact as `s` approaches 1.
    fn big_h(&self, x: f64) -> f64 {
        let log_x = x.ln();
        expm1_over((1.0 - self.s) * log_x) * log_x
    }

    fn big_h_inv(&self, y: f64) -> f64 {
        let t = (y * (1.0 - self.s)).max(-1.0);
        (ln1p_over(t) * y).exp()
    }

    /// A rank in `1..=n`; rank 1 is the most frequent.
    pub fn sample(&self, rng: &mut XorShift) -> u64 {
        loop {
            let u = self.h_last + rng.unit() * (self.h_first - self.h_last);
            let x = self.big_h_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.squeeze || u >= self.big_h(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }
}

/// `(eˣ - 1) / x`, 1 at 0.
fn expm1_over(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x / 2.0
    }
}

/// `ln(1 + x) / x`, 1 at 0.
fn ln1p_over(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x / 2.0
    }
}

/// Draws descriptor values in `0..keys`.
#[derive(Debug, Clone)]
pub enum KeyPicker {
    Uniform(u64),
    Zipf(Zipf),
}

impl KeyPicker {
    pub fn new(dist: KeyDist, keys: u64, s: f64) -> Self {
        match dist {
            KeyDist::Uniform => KeyPicker::Uniform(keys),
            KeyDist::Zipf => KeyPicker::Zipf(Zipf::new(keys, s)),
        }
    }

    pub fn pick(&self, rng: &mut XorShift) -> u64 {
        match self {
            KeyPicker::Uniform(n) => rng.below(*n),
            KeyPicker::Zipf(z) => z.sample(rng) - 1,
        }
    }
}

/// A request ready to send on the chosen transport.
#[derive(Debug, Clone)]
pub enum Payload {
    Grpc(RateLimitRequest),
    Json(Bytes),
}

impl Payload {
    /// Descriptors sent, to check the answer's statuses against.
    pub fn descriptors(&self, workload: &Workload) -> usize {
        match self {
            Payload::Grpc(r) => r.descriptors.len(),
            Payload::Json(_) => workload.descriptors,
        }
    }
}

/// The request recipe, fixed before the first request.
#[derive(Debug, Clone)]
pub struct Workload {
    pub domain: String,
    pub descriptors: usize,
    pub shape: Shape,
    pub entries: usize,
    pub hits_addend: u32,
    pub transport: Transport,
    pub picker: KeyPicker,
}

impl Workload {
    pub fn from_args(args: &Args) -> Self {
        Workload {
            domain: args.domain.clone(),
            descriptors: args.descriptors as usize,
            shape: args.shape,
            entries: args.entries as usize,
            hits_addend: args.hits_addend,
            transport: args.transport,
            picker: KeyPicker::new(args.key_dist, args.keys, args.zipf_s),
        }
    }

    /// The entries of descriptor `index` for drawn value `n`.
    pub fn entries(&self, index: usize, n: u64) -> Vec<(String, String)> {
        let entry = |key: &str, value: String| (key.to_owned(), value);
        match self.shape.at(index) {
            Shape::App | Shape::Mixed => vec![entry("app_id", format!("app-{n}"))],
            Shape::Org => vec![entry("org", format!("org-{n}"))],
            // Sixteen teams per organisation, so the org counters see traffic from several teams.
            Shape::OrgTeam => vec![
                entry("org", format!("org-{}", n / 16)),
                entry("team", format!("team-{n}")),
            ],
            Shape::Path => vec![entry("path", format!("/api/v1/items/{n}"))],
            Shape::Generic => (0..self.entries)
                .map(|j| (format!("key{j}"), format!("v{n}")))
                .collect(),
        }
    }

    /// The next request of a worker whose PRNG is `rng`.
    pub fn next(&self, rng: &mut XorShift) -> Payload {
        let descriptors: Vec<Vec<(String, String)>> = (0..self.descriptors)
            .map(|i| self.entries(i, self.picker.pick(rng)))
            .collect();
        match self.transport {
            Transport::Grpc => Payload::Grpc(RateLimitRequest {
                domain: self.domain.clone(),
                descriptors: descriptors
                    .into_iter()
                    .map(|entries| RateLimitDescriptor {
                        entries: entries
                            .into_iter()
                            .map(|(key, value)| Entry { key, value })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                hits_addend: self.hits_addend,
            }),
            Transport::Json => Payload::Json(self.json(&descriptors)),
        }
    }

    /// The proto3-JSON body of `POST /json`.
    fn json(&self, descriptors: &[Vec<(String, String)>]) -> Bytes {
        let body = serde_json::json!({
            "domain": self.domain,
            "descriptors": descriptors
                .iter()
                .map(|entries| serde_json::json!({
                    "entries": entries
                        .iter()
                        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                        .collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>(),
            "hits_addend": self.hits_addend,
        });
        Bytes::from(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn key_sequence_is_fixed_by_seed_and_stream() {
        let draw = |seed, stream| {
            let mut rng = XorShift::new(seed, stream);
            (0..8).map(|_| rng.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 0), draw(7, 0));
        assert_ne!(draw(7, 0), draw(7, 1));
        assert!(draw(7, 3).iter().all(|&v| v < 1000));
        let mut one = XorShift::new(1, 1);
        assert!((0..100).all(|_| one.below(1) == 0));
    }

    /// Frequencies of the top ranks match `k^-s / Σ j^-s` within sampling noise.
    #[test]
    fn zipf_draws_follow_the_power_law() {
        for (n, s) in [(1000u64, 1.0f64), (100, 0.7), (50, 2.0)] {
            let zipf = Zipf::new(n, s);
            let mut rng = XorShift::new(3, 0);
            let draws = 400_000;
            let mut counts = vec![0u64; n as usize + 1];
            for _ in 0..draws {
                let k = zipf.sample(&mut rng);
                assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
                counts[k as usize] += 1;
            }
            let norm: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
            for k in 1..=3u64 {
                let expected = (k as f64).powf(-s) / norm;
                let seen = counts[k as usize] as f64 / draws as f64;
                assert!(
                    (seen - expected).abs() < 0.05 * expected + 0.002,
                    "n={n} s={s} rank {k}: saw {seen:.4}, expected {expected:.4}"
                );
            }
        }
    }

    #[test]
    fn zipf_with_exponent_zero_is_uniform() {
        let zipf = Zipf::new(4, 0.0);
        let mut rng = XorShift::new(9, 0);
        let mut counts = [0u32; 5];
        for _ in 0..40_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        assert!(
            counts[1..].iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    fn workload(flags: &[&str]) -> Workload {
        let args = Args::parse_from(std::iter::once("sluice-load").chain(flags.iter().copied()));
        Workload::from_args(&args)
    }

    #[test]
    fn mixed_shape_cycles_through_the_example_rules() {
        let w = workload(&["--shape", "mixed"]);
        let keys: Vec<Vec<String>> = (0..5)
            .map(|i| w.entries(i, 42).into_iter().map(|(k, _)| k).collect())
            .collect();
        assert_eq!(
            keys,
            [
                vec!["app_id"],
                vec!["org"],
                vec!["org", "team"],
                vec!["path"],
                vec!["app_id"],
            ]
        );
    }

    #[test]
    fn generic_shape_has_the_requested_entries() {
        let w = workload(&["--shape", "generic", "--entries", "3"]);
        assert_eq!(
            w.entries(0, 7),
            [("key0", "v7"), ("key1", "v7"), ("key2", "v7")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn json_body_is_the_references_request_shape() {
        let w = workload(&[
            "--transport",
            "json",
            "--domain",
            "d",
            "--descriptors",
            "2",
            "--hits-addend",
            "3",
        ]);
        let Payload::Json(body) = w.next(&mut XorShift::new(1, 0)) else {
            panic!("a JSON workload builds JSON payloads");
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["domain"], "d");
        assert_eq!(v["hits_addend"], 3);
        assert_eq!(v["descriptors"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["descriptors"][0]["entries"][0]["key"], "app_id");
    }
}
