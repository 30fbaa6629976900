//! Integration tests: one binary so it links once. Each module drives the real service (or a
//! real part of it) over loopback.

mod access;
mod adversarial;
mod adversarial_gaps;
mod alerting;
mod api;
mod backfill;
mod chaos;
mod delivery;
mod disk;
mod export;
mod fixtures;
mod helpers;
mod lifecycle;
mod membership;
mod monitored_set;
mod openapi;
mod process;
mod queues;
mod reports;
mod retention;
mod rules_api;
mod secrets;
mod service;
mod sim_analytics;
mod sim_channels;
mod sim_chaos;
mod sim_firehose;
mod sim_protocol;
mod sim_rate_limit;
mod sim_shift;
mod sim_topics;
mod sim_truth;
mod sim_users;
