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
//! | ownership | [`cluster`] | instance `i` of `N` (`cluster.index`, `cluster.instances`): the event and changelog partitions it owns |
//! | consume | [`source`] | the consumer of the owned event partitions, micro-batch assembly, offsets |
//! | decode | [`decode`] | JSON payload → validated cells → Arrow batches, rejections |
//! | lookup | [`lookup`] | lookup tables: every table source (latest row per key, e.g. `customers`) and the tables kept from a stream (e.g. `complaint_status`, `complaint_history`) |
//! | queries | [`query`] | `queries/*.sql`: job name, `-- @option` headers |
//! | event time | [`watermark`] | per-source watermarks over partitions, idle partitions |
//! | shuffle | [`shuffle`] | a window grouped across partitions: partial aggregates split by group into a repartition topic (stage 1), read back by the owner of each of its partitions, whose watermark comes from the marks stage 1 writes (stage 2) |
//! | windows | [`window`] | `TUMBLE` / `HOP` / `SESSION`, the plan split, pane and session stores behind one [`window::store::WindowStore`] (**where windows close**) |
//! | jobs | [`job`], [`batch_slot`] | a query planned once, executed on every micro-batch; windowed jobs fire on the watermark |
//! | produce | [`sink`] | JSON rows with deterministic keys, dead letters, the producer |
//! | wiring | [`engine`] | the batch loop, one Kafka transaction per epoch, restore after failures, draining |
//! | state | [`state`], [`brokers`], [`drop_aside`] | the changelog topic and its protocol ([`state::record`]: what each record means, encoded and decoded): window state, watermarks and kept tables as Arrow IPC deltas, checkpoints, restore, `cxpulse reset`; noticing a lost cluster or fencing; closing clients without waiting for it |
//! | observe | [`metrics`], [`gauges`], [`health`], [`http`], [`control`], [`logging`] | Prometheus metrics, `@gauge` job results, readiness, `/metrics` `/healthz` `/readyz`, requests to the running engine (`POST /jobs/{job}/backfill`), tracing |
//! | tooling | [`tools`] | what users run around the engine, which depends on none of it: the command line ([`tools::cli`]), `cxpulse demo` and its live view ([`tools::demo`], [`tools::dashboard`], [`tools::bundled`]), the event generator ([`tools::generate`]), `cxpulse test` ([`tools::testcase`]), `check`, `tail`, `produce` / `read` ([`tools::topic_io`]) and the local noida-db broker ([`tools::local_broker`]) |
//! | topics | [`admin`] | creating the topics the engine writes to (at start and reload, and `cxpulse create-topics`), partition counts, topic limits |
//!
//! # The path of one record
//!
//! 1. `consumer.recv()` in the batch loop (`Engine::run_until_stopped`,
//!    `src/engine/batches.rs`) copies it into the [`source::DecodeStage`],
//!    which decodes it on a thread of its own ([`source::Batcher`],
//!    [`decode`]) into a [`source::MicroBatch`].
//! 2. `Engine::process` (same file) hands the micro-batch (less what the
//!    memory gate holds, `src/engine/memory.rs`) to
//!    `Core::micro_batch` (`src/engine/step.rs`): table changes
//!    and kept tables, then every job on a task of its own
//!    (`src/engine/jobs.rs`: a stateless plan, or
//!    [`job::windowed::WindowedJob::accumulate`] into its
//!    [`window::store::WindowStore`]), then the watermarks
//!    (`src/engine/event_time.rs`) and the windows they close
//!    ([`job::windowed::WindowedJob::fire`]).
//! 3. `Engine::publish` (`src/engine/commit.rs`) sends the rows and dead
//!    letters in the open transaction ([`sink`]); the epoch
//!    (`src/engine/epoch.rs`) records the record's next offset.
//! 4. Every `engine.commit_interval_ms`, `Engine::commit` (same file) writes
//!    the epoch's state changes ([`state::record`], `src/engine/changelog.rs`),
//!    awaits the deliveries, and commits the offsets with the outputs in
//!    one Kafka transaction ([`sink::transaction`]).

pub mod admin;
pub mod batch_slot;
pub mod brokers;
pub mod cluster;
pub mod config;
pub mod control;
pub mod decode;
pub mod drop_aside;
pub mod engine;
pub mod gauges;
pub mod health;
pub mod http;
pub mod job;
pub mod logging;
pub mod lookup;
pub mod metrics;
pub mod query;
pub mod schema;
pub mod shuffle;
pub mod sink;
pub mod source;
pub mod state;
pub mod tools;
pub mod watermark;
pub mod window;
