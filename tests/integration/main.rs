//! Warren's integration tests: one binary, each test on its own namespace
//! against the real RabbitMQ at `AMQP_ADDR` (default the local broker).

mod batched;
mod bombs;
mod browser;
mod cli;
mod control;
mod deadlines;
mod delays;
mod dispatch;
mod dynamic;
mod faults;
mod flows;
mod forgery;
mod http;
mod http_auth;
mod idempotency;
mod kinds;
mod kinds_hardened;
mod limits;
mod pause;
mod peers;
mod pg_tls;
mod polyglot;
mod publish_channel;
mod queued;
mod quorum;
mod rabbitmq43;
mod rerun;
mod retention;
mod roles;
mod schedules;
mod support;
mod tls;
mod validation;
mod window;
mod wire;
