//! The scheduler's bounds: what it builds, holds and publishes at most,
//! beyond a request's own size ([`crate::validate::Limits`]). The engine
//! enforces most of them; the session the batch and result sizes.

/// The scheduler's bounds beyond a request's own size (see
/// [`crate::validate::Limits`]): what it builds, holds and publishes at most. Each is a
/// setting (README, "Limits"); the defaults keep every message Warren
/// publishes under RabbitMQ 4.x's 16 MiB `max_message_size`.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Largest resolved input of a task, in bytes of JSON (default 8 MiB).
    /// Past it the task fails for good, naming the size and the limit;
    /// template expansion stops as soon as it is passed.
    pub max_task_input_bytes: usize,
    /// Largest report (reply or event), in bytes (default 8 MiB). Past it
    /// the largest outputs are left out (`output_elided`), each readable
    /// alone with a status request naming the task.
    pub max_report_bytes: usize,
    /// Largest result message the scheduler reads, in bytes (default
    /// 2 MiB, the worker's own default `max_result_bytes`: set both
    /// together). A larger one is dead-lettered with the reason.
    pub max_result_bytes: usize,
    /// Most distinct task queues that running workflows use at once
    /// (default 1,000): each is a durable queue on the broker, a map entry
    /// and a metrics series. A workflow that would pass it is rejected
    /// (`too_many_queues`).
    pub max_queues: usize,
    /// Most tasks of running workflows held in memory (default 200,000):
    /// the working set. Past it (past a share of it for lower priorities,
    /// `engine/queued.rs`) new submissions are accepted `queued`: committed,
    /// and started in priority order as room frees.
    pub max_active_tasks: usize,
    /// Most bytes of running workflows held in memory: their request
    /// bodies and the outputs received (default 512 MiB). Past it new
    /// submissions are queued as above.
    pub max_active_bytes: usize,
    /// Most workflows queued (default 100,000; about 200 bytes of memory
    /// each, whatever their size). Past it new submissions wait, unacked,
    /// in the broker's queue.
    pub max_queued_workflows: usize,
    /// Most bytes of deliveries taken into one batch (default 64 MiB).
    pub max_batch_bytes: usize,
    /// Most bytes of unacked deliveries the broker may hand over at once
    /// on each consumer (default 512 MiB). The broker counts prefetch in
    /// messages, not bytes, so each consumer's prefetch is capped at this
    /// divided by its largest message: results at `max_result_bytes`,
    /// requests at `Limits::max_body_bytes` (never below 16 and 4).
    pub max_in_flight_bytes: usize,
    /// Most instances of one mapped task (`map`; default 10,000): a wider
    /// array fails the task.
    pub max_map_width: usize,
    /// Largest message the scheduler publishes (default 16 MiB, RabbitMQ
    /// 4.x's `max_message_size`): a larger one is never sent, and one the
    /// broker refuses anyway ends what it belonged to.
    pub max_message_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        const MIB: usize = 1024 * 1024;
        Bounds {
            max_task_input_bytes: 8 * MIB,
            max_report_bytes: 8 * MIB,
            max_result_bytes: warren_shared::limits::DEFAULT_MAX_RESULT_BYTES,
            max_queues: 1_000,
            max_active_tasks: 200_000,
            max_active_bytes: 512 * MIB,
            max_queued_workflows: 100_000,
            max_batch_bytes: 64 * MIB,
            max_in_flight_bytes: 512 * MIB,
            max_map_width: 10_000,
            max_message_bytes: warren_shared::limits::BROKER_MAX_MESSAGE_BYTES,
        }
    }
}

/// Room a task message has beyond its input: ids, kind, attempt.
pub const TASK_ENVELOPE_BYTES: usize = 64 * 1024;

impl Bounds {
    /// Whether the bounds fit together: every message built within them
    /// fits under `max_message_bytes`.
    pub fn check(&self) -> Result<(), String> {
        if self.max_task_input_bytes + TASK_ENVELOPE_BYTES > self.max_message_bytes {
            return Err(format!(
                "max_task_input_bytes ({}) plus {TASK_ENVELOPE_BYTES} bytes for the task message must fit in max_message_bytes ({})",
                self.max_task_input_bytes, self.max_message_bytes
            ));
        }
        if self.max_report_bytes > self.max_message_bytes {
            return Err(format!(
                "max_report_bytes ({}) must fit in max_message_bytes ({})",
                self.max_report_bytes, self.max_message_bytes
            ));
        }
        if self.max_queues == 0
            || self.max_active_tasks == 0
            || self.max_active_bytes == 0
            || self.max_queued_workflows == 0
        {
            return Err(
                "max_queues, max_active_tasks, max_active_bytes and max_queued_workflows must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Bounds {
    /// A consumer's prefetch: `configured`, capped so that `configured`
    /// messages of `largest` bytes stay within `max_in_flight_bytes`, and
    /// at least `floor`.
    pub fn prefetch(&self, configured: u16, largest: usize, floor: u16) -> u16 {
        let fits = self.max_in_flight_bytes / largest.max(1);
        let capped = (configured as usize).min(fits).max(floor as usize);
        capped.min(u16::MAX as usize) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::Bounds;

    #[test]
    fn prefetch_is_capped_by_bytes_in_flight() {
        let b = Bounds::default();
        // 8 MiB results: 64 of them in 512 MiB; 2 MiB ones, 256.
        assert_eq!(b.prefetch(2000, 8 << 20, 16), 64);
        assert_eq!(b.prefetch(2000, b.max_result_bytes, 16), 256);
        // Small results: the configured count.
        assert_eq!(b.prefetch(2000, 64 << 10, 16), 2000);
        // Huge messages: the floor.
        assert_eq!(b.prefetch(64, 1 << 30, 4), 4);
    }
}
