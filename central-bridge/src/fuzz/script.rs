//! A delivery script decoded from the fuzzer's bytes: which of the run's transactions reach
//! which side, in which batches and order, and with which bridge settings. Transactions are
//! named by their index in the run's list (honest ones, then the attacks), so a script can send
//! one twice in a batch, again in a later batch, to one side only, or never.

use arbitrary::{Result, Unstructured};

/// Most deliveries in one script.
const MAX_DELIVERIES: u32 = 12;

/// Largest `sync.batch_size` a script picks: small, so larger deliveries commit in several
/// Postgres transactions.
const MAX_BATCH_SIZE: usize = 8;

/// Which replica a delivery goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The bridge's Postgres replica.
    Bridge,
    /// The node's store.
    Node,
}

/// One frame's worth of transactions sent to one side.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Where it goes.
    pub to: Side,
    /// Indexes into the run's transactions, in sending order; repeats allowed.
    pub txns: Vec<usize>,
}

/// The whole script of one execution.
#[derive(Clone, Debug)]
pub struct Script {
    /// The bridge's `sync.batch_size` (1–8).
    pub batch_size: usize,
    /// Whether the bridge keeps merged documents across batches (its document cache).
    pub doc_cache: bool,
    /// The deliveries, in order.
    pub deliveries: Vec<Delivery>,
}

impl Script {
    /// Decodes a script over `count` transactions (at least one).
    pub fn decode(u: &mut Unstructured<'_>, count: usize) -> Result<Script> {
        let batch_size = u.int_in_range(1..=MAX_BATCH_SIZE)?;
        let doc_cache = u.arbitrary()?;
        let mut deliveries = Vec::new();
        for _ in 0..u.int_in_range(1..=MAX_DELIVERIES)? {
            deliveries.push(delivery(u, count)?);
        }
        Ok(Script {
            batch_size,
            doc_cache,
            deliveries,
        })
    }
}

fn delivery(u: &mut Unstructured<'_>, count: usize) -> Result<Delivery> {
    let to = if u.arbitrary()? {
        Side::Bridge
    } else {
        Side::Node
    };
    let len = u.int_in_range(0..=count + 2)?;
    let txns = (0..len)
        .map(|_| u.choose_index(count))
        .collect::<Result<_>>()?;
    Ok(Delivery { to, txns })
}
