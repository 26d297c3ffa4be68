//! The open-file limit. Most hosts and containers start a process with a soft `RLIMIT_NOFILE`
//! of 1024 and a far higher hard limit; at 1024 a thousand idle sockets lock every client out.
//! Sluice raises the soft limit to the hard one at start-up (as Go's runtime does for every Go
//! server, the reference service included) and sizes its connection caps to what it got.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// File descriptors kept for everything but client connections: the listening sockets, Redis
/// and etcd connections, rule files being read, the log.
pub const RESERVED: u64 = 64;

/// The soft limit after raising it to the hard limit; `None` when the limit cannot be read.
pub fn raise() -> Option<u64> {
    let current = getrlimit(Resource::Nofile);
    let soft = current.current?;
    let Some(hard) = current.maximum else {
        // Unlimited: ask for a large finite number; some kernels refuse "infinity" for files.
        return Some(raise_to(soft, 1 << 20));
    };
    Some(raise_to(soft, hard))
}

fn raise_to(soft: u64, target: u64) -> u64 {
    if target <= soft {
        return soft;
    }
    let wanted = Rlimit {
        current: Some(target),
        maximum: getrlimit(Resource::Nofile).maximum,
    };
    match setrlimit(Resource::Nofile, wanted) {
        Ok(()) => target,
        Err(e) => {
            tracing::warn!(error = %e, soft, target, "cannot raise the open-file limit");
            soft
        }
    }
}

/// The connection cap each of the two listeners can actually keep with `nofile` descriptors:
/// the configured cap, or what the descriptors left after [`RESERVED`] allow, split between
/// both listeners.
pub fn usable_connections(configured: usize, nofile: u64) -> usize {
    let per_listener = nofile.saturating_sub(RESERVED) / 2;
    configured.min(usize::try_from(per_listener).unwrap_or(usize::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_descriptors() {
        assert_eq!(usable_connections(4096, 1024), 480);
        assert_eq!(usable_connections(4096, 1 << 20), 4096);
        assert_eq!(usable_connections(100, 1024), 100);
        assert_eq!(usable_connections(4096, 10), 1);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let after = raise().expect("readable limit");
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, Some(after));
        if let Some(hard) = now.maximum {
            assert_eq!(after, hard);
        }
    }
}
