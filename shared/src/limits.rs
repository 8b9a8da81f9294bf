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
/// Half the broker's limit, not all of it: the scheduler echoes a task's
/// output into the inputs of the tasks that reference it and into the
/// workflow's report, each wrapped in a message of its own with other data
/// beside it. One output of up to 8 MiB, echoed once, leaves the other
/// half of the message for that; more echoes than one are the business of
/// the scheduler's own limits on resolved inputs and reports.
pub const DEFAULT_MAX_RESULT_BYTES: usize = BROKER_MAX_MESSAGE_BYTES / 2;

/// The smallest `max_result_bytes` a worker accepts: below it even an
/// ordinary failed result might not fit.
pub const MIN_MAX_RESULT_BYTES: usize = 1024;
