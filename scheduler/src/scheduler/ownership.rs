//! Which partitions a session owns: the partition of a workflow id, and
//! whether a message of it is this scheduler's to apply or to forward to
//! its owner. Fixed for the life of a session: a change of ownership ends
//! the session.

use warren_shared::topology::partition_of;

/// The partitions a session owns, out of all of them.
pub(super) struct Ownership {
    /// By partition: owned or not.
    owns: Vec<bool>,
    partitions: u16,
    /// More than one partition (PostgreSQL): messages may belong to
    /// another scheduler.
    pub(super) partitioned: bool,
}

impl Ownership {
    /// `owned` out of `partitions` partitions.
    pub(super) fn new(partitions: u16, owned: &[u16]) -> Ownership {
        let mut owns = vec![false; usize::from(partitions)];
        for &p in owned {
            owns[usize::from(p)] = true;
        }
        Ownership {
            owns,
            partitions,
            partitioned: partitions > 1,
        }
    }

    /// How many partitions there are, owned or not.
    pub(super) fn partitions(&self) -> u16 {
        self.partitions
    }

    pub(super) fn part_of(&self, workflow_id: &str) -> u16 {
        partition_of(workflow_id, self.partitions)
    }

    pub(super) fn owns(&self, part: u16) -> bool {
        self.owns.get(usize::from(part)).copied().unwrap_or(false)
    }
}
