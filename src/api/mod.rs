//! REST API (in progress)
