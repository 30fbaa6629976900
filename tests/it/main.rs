//! Integration tests: one binary so it links once. Each module drives the real service (or a
//! real part of it) over loopback.

mod api;
mod delivery;
mod fixtures;
mod helpers;
mod openapi;
mod process;
mod service;
mod sim_protocol;
