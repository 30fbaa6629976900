//! Slack Block Kit (in progress)
