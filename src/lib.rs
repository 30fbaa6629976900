//! # agent-monitor
//!
//! Watches the agents of a Genesys Cloud contact center in real time: streams presence and
//! routing status over the Notifications API, records every transition, alerts Slack when an
//! agent stays idle too long, and serves a typed REST API. An embedded simulator speaks the same
//! protocol so the demo and the tests need no Genesys account.
//!
//! # Layout
//! - [`protocol`]: Genesys wire types (shared by the client and the simulator, pinned by fixtures).
//! - [`domain`]: transitions, normalization, the idle rule.
//! - [`genesys`]: the REST client (OAuth, users, presence definitions, channels, subscriptions,
//!   analytics user details) with its client-side rate budget.
//! - [`backfill`]: the transitions a disconnected stream missed, from analytics.
//! - [`clock`]: Genesys time (the server clock offset, measured once).
//! - [`actors`]: supervisor, connection, agent, persistence and Slack actors (`actors.md`).
//! - [`db`]: sea-orm entities, migrations and queries.
//! - [`api`]: the poem-openapi REST API, Swagger UI and probes.
//! - [`report`]: intervals and time-in-state over transitions (timeline and reports).
//! - [`slack`]: Block Kit message building.
//! - [`sim`]: the embedded Genesys Cloud simulator.
//! - [`config`], [`cli`], [`app`], [`telemetry`], [`secret`], [`health`]: wiring.

pub mod actors;
pub mod api;
pub mod app;
pub mod backfill;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod genesys;
pub mod health;
pub mod metrics;
pub mod notification;
pub mod presence;
pub mod protocol;
pub mod report;
pub mod rules;
pub mod secret;
pub mod sim;
pub mod slack;
pub mod telemetry;
