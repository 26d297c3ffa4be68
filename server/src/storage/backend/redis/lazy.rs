//! A connection to a Redis beside the counters' (the overrides' store, the adaptive limits' fleet
//! aggregate), made on first use and then kept alive by its manager: an unreachable Redis never
//! holds up start-up, and each attempt to connect is bounded.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub struct LazyConnection {
    client: redis::Client,
    timeout: Duration,
    slot: tokio::sync::Mutex<Option<ConnectionManager>>,
}

impl LazyConnection {
    /// Nothing is connected yet; `timeout` bounds connecting and every reply.
    pub fn new(client: redis::Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, made now if it does not exist yet; the error says why it could not be.
    pub async fn get(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0);
        let conn = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}
