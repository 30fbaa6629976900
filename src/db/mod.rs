//! Storage (in progress)
