//! The PostgreSQL backend (`[collector] database = "postgres://..."`): the same tables and
//! the same API results as SQLite, for a fleet whose collectors share one database.
//!
//! Collectors are stateless over it: each runs its own writer thread and read pool. A
//! writer's transaction holds an advisory lock on each log it writes, so the same batch
//! sent to two collectors at once, or two overlapping batches of one device, are deduped
//! one after the other: by batch id, then by the positions of the stored batches whose
//! position range meets the new one's (`ingest.rs`; no per-record unique index). Records
//! go in one binary `COPY` per group; filters find them through the per-batch zone maps
//! (`../zone.rs`), the only per-record indexes being the primary key `seq` and the event ids
//! (schema version 3: the table `record_rows`, the view `records`).
//!
//! Text is compared in byte order (`COLLATE "C"` on every text column), as in SQLite, so the
//! classification prefix filter (a range on the name) and the orderings of the stats match.

pub(crate) mod ingest;
pub(super) mod query;
pub(crate) mod retention;
pub(super) mod schema;

use std::collections::HashMap;
use std::sync::Mutex;

use postgres::{Client, NoTls, Statement};

use super::StoreError;

/// Idle read connections kept open.
const READ_POOL: usize = 4;

/// The write connection and its prepared statements.
pub(crate) struct Writer {
    pub(super) client: Client,
    /// Statements prepared on this connection, by their SQL.
    pub(super) stmts: HashMap<&'static str, Statement>,
    url: String,
    /// The last operation failed: the connection may be dead although the client has not
    /// noticed yet (it learns of a terminated backend only when it next polls the socket).
    pub(super) suspect: bool,
}

impl Writer {
    /// Connects again when the connection was lost (the server restarted, a proxy cut it):
    /// the batches of the failed group were answered with an error and are sent again by
    /// their devices; the next group gets a new connection.
    pub(super) fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        let dead = self.client.is_closed()
            || (self.suspect
                && self
                    .client
                    .is_valid(std::time::Duration::from_secs(2))
                    .is_err());
        if dead {
            self.client = connect_writer(&self.url)?;
            self.stmts.clear();
        }
        self.suspect = false;
        Ok(())
    }

    /// Runs `f` on this connection, first reconnecting if it was lost; a failure marks the
    /// connection suspect, so the next call checks it before use.
    pub(super) fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Writer) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.reconnect_if_closed()?;
        let out = f(self);
        self.suspect = out.is_err();
        out
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("pg::Writer").finish_non_exhaustive()
    }
}

/// The read side: a pool of connections to the same database.
pub(crate) struct Reads {
    url: String,
    pool: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("pg::Reads").finish_non_exhaustive()
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    Ok(Client::connect(url, NoTls)?)
}

/// The write connection. Every statement the writer runs is a lookup by an index, an
/// insert or a `COPY`; with `enable_seqscan = off` (a cost, not a ban) the planner keeps to
/// the indexes also while a table is small or its statistics are stale: on a fresh database
/// it scanned all of `batches` twice per batch for the position lookup (`ingest.rs`), which
/// made small batches several times slower.
fn connect_writer(url: &str) -> Result<Client, StoreError> {
    let mut c = connect(url)?;
    c.batch_execute("SET enable_seqscan = off")?;
    Ok(c)
}

/// Runs a query of a zoned filter (`zone.rs`) on `c` with the planner's explicit sorts off
/// (`enable_sort = off` for this transaction only; a cost, not a ban: a query that has no
/// other plan still sorts). A page of records comes from the candidate batches newest
/// first, each one's records by a range of the primary key, and an incremental sort within
/// each batch keeps that order; without the setting the planner, which cannot tell how few
/// records one batch's range holds, often sorts all the candidates' records to take the
/// first page. (Not for the per-row form: there it would trade the event-id index and a
/// sort of its few rows for a scan of every record in order.)
pub(crate) fn unsorted<T>(
    c: &mut Client,
    f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut tx = c.transaction()?;
    tx.batch_execute("SET LOCAL enable_sort = off")?;
    let out = f(&mut tx)?;
    tx.commit()?;
    Ok(out)
}

/// Connects, migrates, and returns the writer and the read side.
pub(crate) fn open(url: &str) -> Result<(Writer, Reads), StoreError> {
    let mut client = connect(url)?;
    schema::migrate(&mut client)?;
    let client = connect_writer(url)?;
    Ok((
        Writer {
            client,
            stmts: HashMap::new(),
            url: url.to_owned(),
            suspect: false,
        },
        Reads {
            url: url.to_owned(),
            pool: Mutex::new(Vec::new()),
        },
    ))
}

impl Reads {
    /// Runs `f` on a pooled connection (a new one when none is idle). A connection that
    /// failed is not returned to the pool; when it was lost (the server restarted), `f` runs
    /// once more on a new connection (reads are idempotent).
    pub(crate) fn with<T>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().map_err(|_| StoreError::Poisoned)?.pop();
        let mut client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.url)?,
        };
        let mut out = f(&mut client);
        // A terminated backend shows as closed only once the client polls its socket again.
        if out.is_err()
            && (client.is_closed() || client.is_valid(std::time::Duration::from_secs(2)).is_err())
        {
            client = connect(&self.url)?;
            out = f(&mut client);
        }
        if out.is_ok() && !client.is_closed() {
            let mut pool = self.pool.lock().map_err(|_| StoreError::Poisoned)?;
            if pool.len() < READ_POOL {
                pool.push(client);
            }
        }
        out
    }
}
