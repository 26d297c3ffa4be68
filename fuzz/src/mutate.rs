//! The mutations of the bounded run: a small, deterministic (fixed-seed) byte mutator in the
//! style of AFL's havoc stage, with the target's dictionary as its tokens.

/// xorshift64*: deterministic and good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Never zero, which xorshift would keep forever.
        Self(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Bytes and numbers that tend to sit on a parser's edges.
const INTERESTING_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b'\t', b' ', b'"', b'\'', b'\\', b'{', b'}', b'[', b']',
    b':', b',', b'-', b'*', b'&', b'%', b'#', b'!', b'|', b'>', b'0', b'9', 0xc3, 0xe2, 0xf0,
];
const INTERESTING_NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"127",
    b"255",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"1e308",
    b"-0",
    b"0.5",
    b"1e-7",
    b"0x10",
];

pub struct Mutator {
    pub rng: Rng,
    tokens: Vec<Vec<u8>>,
    max_len: usize,
}

impl Mutator {
    pub fn new(seed: u64, tokens: Vec<Vec<u8>>, max_len: usize) -> Self {
        Self {
            rng: Rng::new(seed),
            tokens,
            max_len,
        }
    }

    /// Applies one to eight mutations to `input`; `others` are splice partners.
    pub fn mutate(&mut self, input: &mut Vec<u8>, others: &[Vec<u8>]) {
        let rounds = 1 << self.rng.below(4);
        for _ in 0..rounds {
            self.one(input, others);
        }
        input.truncate(self.max_len);
    }

    fn one(&mut self, input: &mut Vec<u8>, others: &[Vec<u8>]) {
        let rng = &mut self.rng;
        let len = input.len();
        match rng.below(12) {
            // A flipped bit.
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            // An interesting byte, or a random one.
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = if rng.chance(2) {
                    INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]
                } else {
                    rng.next_u64() as u8
                };
            }
            // A run deleted.
            2 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                input.drain(at..at + n);
            }
            // A run of the input copied elsewhere into it (repetition, nesting).
            3 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let chunk = input[from..from + n].to_vec();
                let times = if rng.chance(8) { 1 + rng.below(16) } else { 1 };
                let at = rng.below(len + 1);
                for _ in 0..times {
                    input.splice(at..at, chunk.iter().copied());
                }
            }
            // A dictionary token inserted or written over the input.
            4 | 5 if !self.tokens.is_empty() => {
                let token = &self.tokens[rng.below(self.tokens.len())];
                let at = rng.below(len + 1);
                if rng.chance(2) {
                    input.splice(at..at, token.iter().copied());
                } else {
                    let end = (at + token.len()).min(len);
                    input.splice(at..end, token.iter().copied());
                }
            }
            // A number replaced by one on an edge.
            6 => {
                let number = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                match digit_run(input, rng) {
                    Some((start, end)) => {
                        input.splice(start..end, number.iter().copied());
                    }
                    None => {
                        let at = rng.below(len + 1);
                        input.splice(at..at, number.iter().copied());
                    }
                }
            }
            // Spliced with another input: this one's head, the other's tail.
            7 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            // Random bytes inserted.
            8 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                input.splice(at..at, bytes);
            }
            // The input cut short.
            9 if len > 0 => input.truncate(rng.below(len)),
            // A byte changed by a small amount (lengths, counts, characters).
            10 if len > 0 => {
                let i = rng.below(len);
                let d = 1 + rng.below(16) as u8;
                input[i] = if rng.chance(2) {
                    input[i].wrapping_add(d)
                } else {
                    input[i].wrapping_sub(d)
                };
            }
            // Two runs swapped.
            _ if len > 1 => {
                let a = rng.below(len);
                let b = rng.below(len);
                input.swap(a, b);
            }
            _ => input.push(rng.next_u64() as u8),
        }
    }
}

/// A random run of ASCII digits of `input`, if it has one.
fn digit_run(input: &[u8], rng: &mut Rng) -> Option<(usize, usize)> {
    if input.is_empty() {
        return None;
    }
    let from = rng.below(input.len());
    let start = (from..input.len()).find(|&i| input[i].is_ascii_digit())?;
    let end = (start..input.len())
        .find(|&i| !input[i].is_ascii_digit())
        .unwrap_or(input.len());
    Some((start, end))
}

/// The tokens of an AFL++ dictionary (`name="value"` lines, `\\`, `\"` and `\xNN` escapes), so
/// the bounded run and AFL++ (`-x`) read one file.
pub fn dictionary(text: &str) -> Vec<Vec<u8>> {
    let mut tokens = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('"'), line.rfind('"')) else {
            continue;
        };
        if close <= open {
            continue;
        }
        let quoted = &line.as_bytes()[open + 1..close];
        let mut token = Vec::with_capacity(quoted.len());
        let mut i = 0;
        while i < quoted.len() {
            match (quoted[i], quoted.get(i + 1)) {
                (b'\\', Some(b'x')) if i + 4 <= quoted.len() => {
                    let hex = std::str::from_utf8(&quoted[i + 2..i + 4])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => {
                            token.push(b);
                            i += 4;
                        }
                        None => {
                            token.push(b'\\');
                            i += 1;
                        }
                    }
                }
                (b'\\', Some(&c)) => {
                    token.push(c);
                    i += 2;
                }
                (c, _) => {
                    token.push(c);
                    i += 1;
                }
            }
        }
        tokens.push(token);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_lines_unescape() {
        let t = dictionary("# c\nkw=\"a\\\"b\"\n\"\\x00\\xff\\\\\"\n\nbad\n");
        assert_eq!(t, vec![b"a\"b".to_vec(), vec![0, 0xff, b'\\']]);
    }

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let run = || {
            let mut m = Mutator::new(7, vec![b"tok".to_vec()], 64);
            let mut input = b"domain: edge 123".to_vec();
            let mut seen = Vec::new();
            for _ in 0..1000 {
                m.mutate(&mut input, &[b"other".to_vec()]);
                assert!(input.len() <= 64);
                seen.push(input.clone());
            }
            seen
        };
        assert_eq!(run(), run());
    }
}
