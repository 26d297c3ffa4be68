use proptest::prelude::*;

use super::*;
use crate::algorithm::{Algorithm, MICROS_PER_SEC, Period, lease};

const SEC: Micros = MICROS_PER_SEC;
const T0: Micros = 1_700_000_000 * SEC;

fn pool(slots: u64) -> Policy {
    Policy {
        algorithm: Algorithm::Concurrency,
        period: Period::Seconds(60),
        limit: slots,
        burst: slots,
    }
}

fn id(n: u16) -> LeaseId {
    let mut bytes = [0u8; 16];
    bytes[..2].copy_from_slice(&n.to_be_bytes());
    LeaseId(bytes)
}

/// An enqueue at `now` of a ticket that leaves the queue at `deadline`.
fn waiter_at(now: Micros, n: u16, tenant: &str, weight: u32, deadline: Micros) -> Op {
    Op::Enqueue {
        waiter: Waiter {
            id: id(n),
            tenant: tenant.as_bytes().to_vec(),
            weight,
            cost: 1,
            wait: deadline - now,
        },
        max_depth: 100,
    }
}

fn waiter(n: u16, tenant: &str, weight: u32, deadline: Micros) -> Op {
    waiter_at(T0, n, tenant, weight, deadline)
}

/// A pool and its queue, stepped through operations.
struct Sim {
    policy: Policy,
    pool: State,
    queue: Queue,
}

impl Sim {
    fn new(slots: u64) -> Self {
        Self {
            policy: pool(slots),
            pool: State::Empty,
            queue: Queue::default(),
        }
    }

    fn op(&mut self, now: Micros, op: &Op) -> Outcome {
        let (pool, queue, out) = apply(&self.policy, &self.pool, &self.queue, now, op);
        self.pool = pool;
        self.queue = queue;
        out
    }

    /// Releases the lease `lease` held (as a release through a batch would).
    fn release(&mut self, now: Micros, lease: LeaseId) {
        let step = lease::step(&self.policy, &self.pool, now, -1, Some(&lease));
        self.pool = step.next;
    }

    fn held(&self, now: Micros) -> Vec<LeaseId> {
        lease::live(&self.pool, now).iter().map(|l| l.id).collect()
    }
}

#[test]
fn an_empty_queue_grants_at_once_while_slots_are_free() {
    let mut s = Sim::new(2);
    let far = T0 + 10 * SEC;
    assert_eq!(s.op(T0, &waiter(1, "a", 1, far)).status, Status::Granted);
    assert_eq!(s.op(T0, &waiter(2, "a", 1, far)).status, Status::Granted);
    let third = s.op(T0, &waiter(3, "a", 1, far));
    assert_eq!(third.status, Status::Waiting { ahead: 0 });
    assert_eq!(third.depth, 1);
    // The soonest lease expiry is when the queue can move without a release.
    assert_eq!(third.moves_in, 10 * SEC);
    assert_eq!(s.held(T0), vec![id(1), id(2)]);
}

#[test]
fn one_tenant_is_served_first_come_first_served() {
    let mut s = Sim::new(1);
    let far = T0 + 100 * SEC;
    s.op(T0, &waiter(100, "a", 1, far));
    for n in [7, 3, 9, 1] {
        s.op(T0, &waiter(n, "a", 1, far));
    }
    let mut order = Vec::new();
    let mut holder = id(100);
    for _ in 0..4 {
        s.release(T0, holder);
        let out = s.op(T0, &Op::Poll(id(0)));
        assert_eq!(out.granted.len(), 1);
        holder = out.granted[0];
        order.push(holder);
    }
    assert_eq!(order, vec![id(7), id(3), id(9), id(1)]);
}

#[test]
fn backlogged_tenants_are_served_by_weight_and_a_lone_waiter_goes_first() {
    let mut s = Sim::new(1);
    let far = T0 + 100 * SEC;
    s.op(T0, &waiter(1000, "x", 1, far));
    for n in 0..20 {
        s.op(T0, &waiter(n, "heavy", 2, far));
        s.op(T0, &waiter(100 + n, "light", 1, far));
    }
    let mut holder = id(1000);
    let mut grants = Vec::new();
    for _ in 0..15 {
        s.release(T0, holder);
        holder = s.op(T0, &Op::Poll(id(0))).granted[0];
        grants.push(holder);
    }
    let heavy = grants.iter().filter(|g| g.0[1] < 100).count();
    assert_eq!(heavy, 10, "2:1 over 15 grants: {grants:?}");

    // A newcomer's single ticket starts at the virtual time: it is served within one round
    // (after the tickets already tagged up to its own tag), not behind either backlog.
    s.op(T0, &waiter(500, "newcomer", 1, far));
    let mut next = Vec::new();
    for _ in 0..4 {
        s.release(T0, holder);
        holder = s.op(T0, &Op::Poll(id(0))).granted[0];
        next.push(holder);
    }
    assert_eq!(next[3], id(500), "{next:?}");
    assert_eq!(s.queue.tickets.len(), 22);
}

#[test]
fn full_queues_and_weightless_tenants_are_refused() {
    let mut s = Sim::new(0);
    let far = T0 + SEC;
    let op = |n: u16, weight| Op::Enqueue {
        waiter: Waiter {
            id: id(n),
            tenant: b"t".to_vec(),
            weight,
            cost: 1,
            wait: far - T0,
        },
        max_depth: 2,
    };
    assert_eq!(s.op(T0, &op(1, 1)).status, Status::Waiting { ahead: 0 });
    assert_eq!(s.op(T0, &op(2, 1)).status, Status::Waiting { ahead: 1 });
    assert_eq!(s.op(T0, &op(3, 1)).status, Status::Full);
    assert_eq!(s.op(T0, &op(4, 0)).status, Status::Unweighted);
    // Enqueueing a ticket again only looks at it.
    assert_eq!(s.op(T0, &op(2, 1)).status, Status::Waiting { ahead: 1 });
    assert_eq!(s.queue.tickets.len(), 2);
}

#[test]
fn tickets_leave_at_their_deadline_and_are_never_granted_after_it() {
    let mut s = Sim::new(1);
    s.op(T0, &waiter(1, "a", 1, T0 + 100 * SEC));
    assert_eq!(
        s.op(T0, &waiter(2, "a", 1, T0 + SEC)).status,
        Status::Waiting { ahead: 0 }
    );
    s.release(T0 + SEC, id(1));
    let out = s.op(T0 + SEC, &Op::Poll(id(2)));
    assert_eq!(out.status, Status::Gone);
    assert!(out.granted.is_empty());
    assert_eq!(s.queue, Queue::default(), "an empty queue is no state");
}

#[test]
fn a_withdrawn_grant_is_released_and_passed_on() {
    let mut s = Sim::new(1);
    let far = T0 + 100 * SEC;
    s.op(T0, &waiter(1, "a", 1, far));
    s.op(T0, &waiter(2, "a", 1, far));
    s.op(T0, &waiter(3, "b", 1, far));
    // 2 withdraws while waiting: gone, nothing granted.
    let out = s.op(T0, &Op::Withdraw(id(2)));
    assert_eq!((out.status, out.depth), (Status::Gone, 1));
    // 1 holds the slot and gives up on it: 3 is granted in the same operation.
    let out = s.op(T0, &Op::Withdraw(id(1)));
    assert_eq!(out.granted, vec![id(3)]);
    assert_eq!(s.held(T0), vec![id(3)]);
}

#[test]
fn leases_expiring_unreleased_free_their_slot_for_the_queue() {
    let mut s = Sim::new(1);
    s.op(T0, &waiter(1, "a", 1, T0 + 100 * SEC));
    let out = s.op(T0, &waiter(2, "a", 1, T0 + 100 * SEC));
    assert_eq!(out.moves_in, 60 * SEC);
    let out = s.op(T0 + 60 * SEC, &Op::Poll(id(2)));
    assert_eq!((out.status, out.granted), (Status::Granted, vec![id(2)]));
}

#[derive(Debug, Clone)]
enum Action {
    Enqueue {
        tenant: u8,
        advance_ms: u16,
        wait_ms: u16,
    },
    Release {
        which: u8,
        advance_ms: u16,
    },
    Withdraw {
        which: u8,
    },
    Poll {
        advance_ms: u16,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0u8..4, 0u16..200, 1u16..3000)
            .prop_map(|(tenant, advance_ms, wait_ms)| Action::Enqueue { tenant, advance_ms, wait_ms }),
        3 => (any::<u8>(), 0u16..200).prop_map(|(which, advance_ms)| Action::Release { which, advance_ms }),
        1 => any::<u8>().prop_map(|which| Action::Withdraw { which }),
        1 => (0u16..2000).prop_map(|advance_ms| Action::Poll { advance_ms }),
    ]
}

const WEIGHTS: [u32; 4] = [1, 2, 3, 5];

proptest! {
    /// Whatever happens: the pool never holds more than its slots; each grant is the queued
    /// ticket with the smallest tag; nothing is granted at or past its deadline; and a ticket is
    /// granted before at most as many others as the tags allow (no starvation).
    #[test]
    fn grants_follow_virtual_finish_order(
        slots in 1u64..4,
        actions in proptest::collection::vec(action(), 1..120),
    ) {
        let mut s = Sim::new(slots);
        let mut now = T0;
        let mut next_id = 0u16;
        // Per queued ticket: the tag it got, and the virtual time when it was queued.
        let mut queued: Vec<(LeaseId, u64, u64, usize)> = Vec::new();
        let mut grants_so_far = 0usize;
        for a in actions {
            let op = match a {
                Action::Enqueue { tenant, advance_ms, wait_ms } => {
                    now += u64::from(advance_ms) * 1000;
                    next_id += 1;
                    waiter_at(
                        now,
                        next_id,
                        &tenant.to_string(),
                        WEIGHTS[usize::from(tenant)],
                        now + u64::from(wait_ms) * 1000,
                    )
                }
                Action::Release { which, advance_ms } => {
                    now += u64::from(advance_ms) * 1000;
                    let held = s.held(now);
                    if !held.is_empty() {
                        s.release(now, held[usize::from(which) % held.len()]);
                    }
                    Op::Poll(id(u16::MAX))
                }
                Action::Withdraw { which } => match s.queue.tickets.len() {
                    0 => Op::Poll(id(u16::MAX)),
                    n => Op::Withdraw(s.queue.tickets[usize::from(which) % n].id),
                },
                Action::Poll { advance_ms } => {
                    now += u64::from(advance_ms) * 1000;
                    Op::Poll(id(u16::MAX))
                }
            };
            let before = s.queue.clone();
            let vtime_before = before.vtime;
            let out = s.op(now, &op);
            prop_assert!(s.held(now).len() as u64 <= slots);
            // Each granted ticket was live and the smallest of those still queued.
            let mut candidates: Vec<Ticket> =
                before.tickets.iter().filter(|t| t.deadline > now).cloned().collect();
            if let Op::Enqueue { .. } = op
                && let Some(t) = s.queue.tickets.iter().chain(before.tickets.iter()).find(|t| t.id == op.ticket())
            {
                candidates.push(t.clone());
            }
            for g in &out.granted {
                let (at, head) = candidates
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, t)| (t.finish, t.id))
                    .map(|(k, t)| (k, t.clone()))
                    .unwrap_or_else(|| {
                        // A ticket queued and granted by the same enqueue.
                        (usize::MAX, Ticket { finish: 0, id: *g, deadline: u64::MAX, cost: 1, tenant: Vec::new(), weight: 1 })
                    });
                if at != usize::MAX {
                    prop_assert_eq!(head.id, *g);
                    prop_assert!(head.deadline > now);
                    candidates.remove(at);
                }
                grants_so_far += 1;
                if let Some(k) = queued.iter().position(|q| q.0 == *g) {
                    let (_, finish, vtime, granted_before) = queued.remove(k);
                    // Others granted while it waited had tags at most its own: at most
                    // (finish − V) × weight / SCALE + 1 per tenant.
                    let bound: u64 = WEIGHTS
                        .iter()
                        .map(|w| (finish - vtime) * u64::from(*w) / SCALE + 1)
                        .sum();
                    prop_assert!((grants_so_far - granted_before - 1) as u64 <= bound);
                }
            }
            if let Op::Enqueue { .. } = op
                && let Some(t) = s.queue.tickets.iter().find(|t| t.id == op.ticket())
            {
                queued.push((t.id, t.finish, vtime_before, grants_so_far));
            }
            queued.retain(|q| s.queue.tickets.iter().any(|t| t.id == q.0));
            // The queue stays in order, and a free slot never sits beside a waiting ticket.
            prop_assert!(s.queue.tickets.windows(2).all(|w| (w[0].finish, w[0].id) < (w[1].finish, w[1].id)));
            prop_assert!(s.queue.tickets.is_empty() || s.held(now).len() as u64 == slots);
        }
    }
}

fn share_pool(capacity: u64) -> Policy {
    Policy {
        algorithm: Algorithm::FairShare,
        period: Period::Seconds(1),
        limit: capacity,
        burst: capacity,
    }
}

fn share_waiter(n: u16, tenant: &str, weight: u32, cost: u64) -> Op {
    Op::Enqueue {
        waiter: Waiter {
            id: id(n),
            tenant: tenant.as_bytes().to_vec(),
            weight,
            cost,
            wait: 10 * SEC,
        },
        max_depth: 100,
    }
}

#[test]
fn a_fair_share_queue_is_granted_when_the_window_refills_by_weight() {
    let mut s = Sim {
        policy: share_pool(6),
        pool: State::Empty,
        queue: Queue::default(),
    };
    // The window's 6 units go at once, first come.
    for n in 0..6 {
        assert_eq!(
            s.op(T0, &share_waiter(n, "x", 1, 1)).status,
            Status::Granted
        );
    }
    // Then two backlogged tenants, weights 2:1, 12 tickets each.
    for n in 0..12 {
        let out = s.op(T0, &share_waiter(100 + n, "heavy", 2, 1));
        assert!(matches!(out.status, Status::Waiting { .. }));
        assert_eq!(out.moves_in, SEC, "until the window ends");
        s.op(T0, &share_waiter(200 + n, "light", 1, 1));
    }
    // The next window's capacity goes to the queue in tag order (heavy, heavy, light, heavy,
    // heavy), except the unit the fair share keeps for `x`, whose demand of the last window
    // fades over this one.
    let out = s.op(T0 + SEC, &Op::Poll(id(0)));
    let heavy = out.granted.iter().filter(|g| g.0[1] < 200).count();
    assert_eq!((out.granted.len(), heavy), (5, 4), "{:?}", out.granted);
    assert_eq!(out.granted[2], id(200));
    assert_eq!(out.depth, 19);
    // A granted ticket that withdraws is refunded: its unit goes to the next ticket.
    let first = out.granted[0];
    let out = s.op(T0 + SEC, &Op::Withdraw(first));
    assert_eq!(out.granted.len(), 1);
    assert_eq!(s.op(T0 + SEC, &Op::Poll(first)).status, Status::Gone);
}

#[test]
fn a_fair_share_ticket_larger_than_the_pool_is_refused_and_tenants_keep_their_order() {
    let mut s = Sim {
        policy: share_pool(4),
        pool: State::Empty,
        queue: Queue::default(),
    };
    assert_eq!(
        s.op(T0, &share_waiter(1, "a", 1, 5)).status,
        Status::Oversized
    );
    assert_eq!(
        s.op(T0, &share_waiter(2, "a", 1, 3)).status,
        Status::Granted
    );
    // 1 unit left: a's 2-unit ticket waits, and a's later 1-unit ticket waits behind it;
    // another tenant's 1-unit ticket is granted.
    assert!(matches!(
        s.op(T0, &share_waiter(3, "a", 1, 2)).status,
        Status::Waiting { .. }
    ));
    assert!(matches!(
        s.op(T0, &share_waiter(4, "a", 1, 1)).status,
        Status::Waiting { .. }
    ));
    assert_eq!(
        s.op(T0, &share_waiter(5, "b", 1, 1)).status,
        Status::Granted
    );
}
