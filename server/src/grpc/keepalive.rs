//! Keepalive pings: a connection whose client has sent nothing for a whole interval is sent an
//! HTTP/2 PING, and closed when the answer does not come in time. An idle connection is closed
//! by the idle timeout anyway; this finds the peers that vanished (a killed node, a dropped NAT
//! mapping) under a call that never ends, such as a health `Watch`.

use crate::listener::{Activity, Limits};

/// Resolves when the peer failed to answer a ping; never while it answers.
pub async fn run(ping_pong: Option<h2::PingPong>, activity: &Activity, limits: &Limits) {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    let mut seen = activity.bytes_read();
    loop {
        tokio::time::sleep(limits.keepalive_interval).await;
        let now = activity.bytes_read();
        if now != seen {
            seen = now;
            continue;
        }
        let answer =
            tokio::time::timeout(limits.keepalive_timeout, ping_pong.ping(h2::Ping::opaque()))
                .await;
        match answer {
            Ok(Ok(_pong)) => seen = activity.bytes_read(),
            // The connection failed: its own task notices and ends.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}
