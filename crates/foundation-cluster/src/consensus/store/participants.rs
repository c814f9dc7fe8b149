//! The member ids whose Raft traffic this member has counted, kept
//! durably (the `participants` record of the log database).

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::log_disk::{Disk, Op};
use super::{PARTICIPANTS, encode};

/// The member ids whose Raft answers (votes, acknowledgements, refusals)
/// this member has taken, each recorded durably before its first answer
/// counts: a member whose data is lost is then refused by any peer that
/// ever counted it (`consensus.replicated`). Cheap to clone.
#[derive(Clone)]
pub struct Participants {
    ids: Arc<parking_lot::RwLock<BTreeSet<u64>>>,
    /// Serializes the (rare) writes.
    writing: Arc<Mutex<()>>,
    disk: Option<Disk>,
}

impl Participants {
    pub(super) fn new(ids: BTreeSet<u64>, disk: Option<Disk>) -> Self {
        Self { ids: Arc::new(parking_lot::RwLock::new(ids)), writing: Arc::new(Mutex::new(())), disk }
    }

    /// Whether `id`'s answers were taken here.
    pub fn contains(&self, id: u64) -> bool {
        self.ids.read().contains(&id)
    }

    /// Records `id` (durably, the first time) before its answer is used.
    pub async fn record(&self, id: u64) -> io::Result<()> {
        if self.contains(id) {
            return Ok(());
        }
        let _one = self.writing.lock().await;
        if self.contains(id) {
            return Ok(());
        }
        let mut next = self.ids.read().clone();
        next.insert(id);
        if let Some(d) = &self.disk {
            d.write(vec![Op::Meta(PARTICIPANTS, encode(&next)?)]).await?;
        }
        *self.ids.write() = next;
        Ok(())
    }
}
