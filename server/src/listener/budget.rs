//! A connection's buffer budget: bytes its requests in flight may hold, shared by them.
//!
//! `max_concurrent_streams × max_header_bytes` (1.6 MB with the defaults) is what HTTP/2's own
//! limits would let one connection pin with calls that send headers and then nothing; bodies read
//! by handlers add to it. Charging what each request holds to one budget per connection
//! (`connection_buffer_bytes`) until the request ends bounds all of it: the gRPC listener charges
//! each call's headers (a stream over the budget is refused with `REFUSED_STREAM`, which tells the
//! client it was not processed), the HTTP listener each request's headers (429 over the budget)
//! and its body as it is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a request's headers count against its connection's budget: HTTP/2's own measure
/// (RFC 9113 section 6.5.2: name, value and 32 bytes per field).
pub fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// One connection's budget.
#[derive(Debug)]
pub struct Budget {
    capacity: usize,
    held: AtomicUsize,
}

impl Budget {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            held: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` for one request, or `None` when that would pass the budget.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        self.take(bytes).then(|| Charge {
            budget: Arc::clone(self),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let Some(after) = held.checked_add(bytes).filter(|&a| a <= self.capacity) else {
                return false;
            };
            match self
                .held
                .compare_exchange_weak(held, after, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }
}

impl Charge {
    /// Adds `bytes` to this request's share; `false` (and nothing taken) when that would pass
    /// the budget.
    pub fn grow(&mut self, bytes: usize) -> bool {
        let taken = self.budget.take(bytes);
        if taken {
            self.bytes += bytes;
        }
        taken
    }
}

/// A request's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_capacity_and_gives_back_on_drop() {
        let budget = Arc::new(Budget::new(1000));
        let a = budget.charge(600).expect("fits");
        assert!(budget.charge(401).is_none());
        let b = budget.charge(400).expect("fits exactly");
        drop(a);
        let c = budget.charge(600).expect("fits again");
        drop((b, c));
        assert_eq!(budget.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_charge_grows_within_the_capacity() {
        let budget = Arc::new(Budget::new(1000));
        let mut a = budget.charge(0).expect("empty");
        assert!(a.grow(700));
        let other = budget.charge(300).expect("fits");
        assert!(!a.grow(1));
        drop(other);
        assert!(a.grow(300));
        drop(a);
        assert_eq!(budget.held.load(Ordering::Relaxed), 0);
    }
}
