//! Following a store's change notifications (Redis pub/sub, an etcd watch), the same way for
//! both: open the feed, signal a reload once it is open (changes made while it was not are not
//! replayed) and on every message, and reopen it a second after it breaks. A signal is only a
//! hint to reload; the sync loop's poll covers whatever a broken feed misses.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};

/// How long to wait before reopening a feed that broke or could not be opened.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Keeps `open`ing the feed while the receiver lives; every message (`Ok`) and every successful
/// open signals the receiver. An `Err` message ends the feed and is logged with `what`.
pub(super) fn follow<Open, Fut, Feed>(
    what: &'static str,
    mut open: Open,
) -> tokio::sync::mpsc::Receiver<()>
where
    Open: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Feed, String>> + Send,
    Feed: Stream<Item = Result<(), String>> + Send + Unpin,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while !tx.is_closed() {
            match open().await {
                Ok(mut feed) => {
                    // A full channel already holds a pending reload.
                    let _ = tx.try_send(());
                    loop {
                        match feed.next().await {
                            Some(Ok(())) => {
                                let _ = tx.try_send(());
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "{what} failed; reopening");
                                break;
                            }
                            None => {
                                tracing::warn!("{what} ended; reopening");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot open {what}"),
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    });
    rx
}
