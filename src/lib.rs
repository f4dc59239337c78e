//! # cxpulse
//!
//! A streaming analytics engine for customer events: Kafka in, continuous
//! DataFusion SQL jobs, Kafka and Prometheus out.
//!
//! # Layout
//!
//! The modules follow the data flow, and depend on each other without a
//! cycle (`tests/layout.rs`):
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | configuration | [`config`] | embedded default → file → `CXPULSE__*` env, all problems at once |
//! | sources | [`schema`] | the declared sources (`[[sources]]`) as one value per configuration ([`schema::Sources`]): streams and tables, their fields and Arrow schemas |
//! | consume | [`source`] | the Kafka consumer group, micro-batch assembly, offsets |
//! | decode | [`decode`] | JSON payload → validated cells → Arrow batches, rejections |
//! | lookup | [`lookup`] | lookup tables: every table source (latest row per key, e.g. `customers`) and the tables kept from a stream (e.g. `complaint_status`, `complaint_history`) |
//! | queries | [`query`] | `queries/*.sql`: job name, `-- @option` headers |
//! | event time | [`watermark`] | per-source watermarks over partitions, idle partitions |
//! | windows | [`window`] | `TUMBLE` / `HOP` / `SESSION`, the plan split, pane and session stores behind one [`window::store::WindowStore`] (**where windows close**) |
//! | jobs | [`job`], [`batch_slot`] | a query planned once, executed on every micro-batch; windowed jobs fire on the watermark |
//! | produce | [`sink`] | JSON rows with deterministic keys, dead letters, the producer |
//! | wiring | [`engine`] | the batch loop, one Kafka transaction per epoch, restore after failures, draining |
//! | state | [`state`], [`brokers`], [`drop_aside`] | the changelog topic and its protocol ([`state::record`]: what each record means, encoded and decoded): window state, watermarks and kept tables as Arrow IPC deltas, checkpoints, restore, `cxpulse reset`; noticing a lost cluster or fencing; closing clients without waiting for it |
//! | observe | [`metrics`], [`gauges`], [`health`], [`http`], [`control`], [`logging`] | Prometheus metrics, `@gauge` job results, readiness, `/metrics` `/healthz` `/readyz`, requests to the running engine (`POST /jobs/{job}/backfill`), tracing |
//! | simulate | [`generate`] | deterministic, realistic customer events; publishing them in compressed real time (`cxpulse generate`) |
//! | test offline | [`testcase`] | `cxpulse test`: query test cases from files, run through the engine's own steps with no broker, compared with their expected rows |
//! | command line | [`cli`] | every command and flag, as clap parses them |
//! | operate | [`check`], [`admin`], [`topic_io`], [`tail`], [`local_broker`] | `cxpulse check`; topic creation; `produce` / `read`; `tail JOB`; the local noida-db broker |
//! | demo | [`demo`], [`dashboard`], [`bundled`] | `cxpulse demo`: broker, generator and every bundled job; the live view; the queries built into the binary |

pub mod admin;
pub mod batch_slot;
pub mod brokers;
pub mod bundled;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod decode;
pub mod demo;
pub mod drop_aside;
pub mod engine;
pub mod gauges;
pub mod generate;
pub mod health;
pub mod http;
pub mod job;
pub mod local_broker;
pub mod logging;
pub mod lookup;
pub mod metrics;
pub mod query;
pub mod schema;
pub mod sink;
pub mod source;
pub mod state;
pub mod tail;
pub mod testcase;
pub mod topic_io;
pub mod watermark;
pub mod window;
