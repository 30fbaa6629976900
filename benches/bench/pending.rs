//! Figures that wait for simulator features being built in parallel (issue 6). Each prints
//! `name skipped reason` until its module replaces the stub here.

use crate::common::{Ctx, skipped};

/// Figure 7, recovery: after a socket drop under load, time until the stream flows again and
/// until the gap is backfilled. Needs gap backfill.
pub fn recovery(_ctx: &Ctx) {
    skipped(
        "recovery",
        "pending: needs the simulator firehose mode and gap backfill (issue 6 figure 7)",
    );
}
