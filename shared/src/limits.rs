//! Size limits Warren's processes share, and the broker limit their
//! defaults are chosen against.
//!
//! RabbitMQ 4.x refuses any message over its `max_message_size`, 16 MiB by
//! default, by closing the publishing channel; a message it refuses once
//! it refuses forever. So nothing Warren publishes may exceed that unless
//! the operator raises both the broker's limit and Warren's.

/// RabbitMQ 4.x's default `max_message_size` (RabbitMQ 3.x: 128 MiB).
pub const BROKER_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The default of the worker's `max_result_bytes`: the largest result body
/// (the JSON of the whole result message) a worker publishes; a larger one
/// is replaced by a failed, non-retryable result saying so.
///
/// 2 MiB, an eighth of the broker's limit (Temporal's payload limit is the
/// same size). Well under the broker's limit because the scheduler echoes
/// an output into the inputs of the tasks that reference it and into the
/// workflow's report. And small, because the broker counts prefetch in
/// messages: the scheduler's results prefetch is capped so that that many
/// results of this size fit its in-flight budget (512 MiB: 256 results,
/// enough for full batches; at 8 MiB only 64 fit, which cost a quarter of
/// the fan-out throughput in the benchmark). Raise it on the workers and
/// the scheduler together for larger outputs.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 2 * 1024 * 1024;

/// The smallest `max_result_bytes` a worker accepts: below it even an
/// ordinary failed result might not fit.
pub const MIN_MAX_RESULT_BYTES: usize = 1024;
