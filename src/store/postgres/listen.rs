//! The key change feed's push side on PostgreSQL: one connection per node,
//! outside the pool, with `application_name = gatehouse-listen`, that
//! `LISTEN`s for the `NOTIFY` every change-feed row sends when its
//! transaction commits (schema step 3). A notification only wakes the
//! feed, which then reads the rows (`key_changes_since`): the rows are the
//! record, so nothing is lost to a dropped notification, and a node that
//! reconnects catches up from the last row it read.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::{tls, PgError};

/// `application_name` of the listening connection (SPEC section 14), so
/// operators can find it in `pg_stat_activity`.
pub const LISTEN_APPLICATION_NAME: &str = "gatehouse-listen";
/// The channel `schema.postgres.sql` notifies.
pub const CHANNEL: &str = "gatehouse_key_changes";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the listening connection reports.
enum Event {
    Notified,
    Closed(String),
}

/// A live subscription. Dropping it closes the connection.
pub struct Listener {
    client: tokio_postgres::Client,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Listener {
    /// Connects and subscribes.
    pub async fn connect(url: &str) -> Result<Listener, PgError> {
        let parsed = tls::split_url(url)?;
        let mut config: tokio_postgres::Config = parsed
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Config(e.to_string()))?;
        config.application_name(LISTEN_APPLICATION_NAME);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.ssl_mode(parsed.tls.ssl_mode());
        let (tx, events) = mpsc::unbounded_channel();
        let client = match parsed.tls.connector()? {
            None => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(pump(connection, tx));
                client
            }
            Some(tls) => {
                let (client, connection) = config.connect(tls).await?;
                tokio::spawn(pump(connection, tx));
                client
            }
        };
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Listener { client, events })
    }

    /// Waits for a notification, at most `timeout`; then checks that the
    /// connection still answers (a dead peer that sent no reset is found
    /// here, not only when it finally times out). `Err` when the
    /// subscription is lost: reconnect and catch up.
    pub async fn wait(&mut self, timeout: Duration) -> Result<(), PgError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(Event::Notified)) => {
                // Take every notification already here: one read covers them.
                loop {
                    match self.events.try_recv() {
                        Ok(Event::Notified) => {}
                        Ok(Event::Closed(why)) => return Err(PgError::Pool(why)),
                        Err(_) => break,
                    }
                }
                Ok(())
            }
            Ok(Some(Event::Closed(why))) => Err(PgError::Pool(why)),
            Ok(None) => Err(PgError::Pool("the listening connection ended".into())),
            Err(_) => {
                tokio::time::timeout(timeout, self.client.simple_query(""))
                    .await
                    .map_err(|_| {
                        PgError::Pool("the listening connection stopped answering".into())
                    })??;
                Ok(())
            }
        }
    }
}

/// Drives the connection, forwarding notifications, until it ends.
async fn pump<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: mpsc::UnboundedSender<Event>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                if tx.send(Event::Notified).is_err() {
                    return; // the listener was dropped
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let _ = tx.send(Event::Closed(super::chain(&e)));
                return;
            }
            None => {
                let _ = tx.send(Event::Closed("the listening connection ended".into()));
                return;
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::store::keys::KeyChangeSubscription for Listener {
    async fn wait(&mut self, timeout: Duration) -> crate::store::StoreResult<()> {
        Ok(Listener::wait(self, timeout).await?)
    }
}
