//! Integration tests: one binary so it links once. Each module drives the real service (or a
//! real part of it) over loopback.

mod access;
mod api;
mod fixtures;
mod helpers;
mod openapi;
mod process;
mod retention;
mod secrets;
mod service;
mod sim_protocol;
