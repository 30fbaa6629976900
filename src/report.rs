//! Intervals and time-in-state: the one implementation behind `GET /api/v1/agents/{user_id}/timeline`
//! and `GET /api/v1/reports/time-in-state`.
//!
//! Pure functions over transitions, no I/O: the caller feeds the transitions of one user and one
//! dimension (presence or routing) in ascending (`event_timestamp`, `id`) order, starting with the
//! last transition before the window (the state in force at `from`), and gets back intervals
//! clipped to the window. Everything is UTC; only [`split_at_local_midnight`] looks at a time
//! zone. Durations are whole milliseconds internally and seconds (with millisecond fractions) on
//! the wire.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::Kind;

/// A half-open UTC window `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
}

impl Window {
    /// Where an interval still open at the end of the data stops: `now`, or `to` if earlier.
    pub fn open_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.min(self.to)
    }
}

/// The part of a transition the interval logic needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Normalized state (`IDLE`, `ON_QUEUE`, …).
    pub state: String,
    /// Org presence label (presence only).
    pub org_presence: Option<String>,
    /// When the state began (Genesys's timestamp), UTC.
    pub at: DateTime<Utc>,
}

/// A state held over `[start, end)`, already clipped to the window; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// The dimension.
    pub kind: Kind,
    /// Normalized state.
    pub state: String,
    /// Org presence label (presence only).
    pub org_presence: Option<String>,
    /// Inclusive start, UTC (never before the window's `from`).
    pub start: DateTime<Utc>,
    /// Exclusive end, UTC (never after the window's `to` nor after "now").
    pub end: DateTime<Utc>,
}

impl Interval {
    /// Length in milliseconds (always > 0).
    pub fn millis(&self) -> i64 {
        (self.end - self.start).num_milliseconds()
    }

    /// Length in seconds, millisecond precision.
    pub fn seconds(&self) -> f64 {
        millis_to_seconds(self.millis())
    }
}

/// Milliseconds as seconds with a millisecond fraction (exact for any realistic sum).
pub fn millis_to_seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

/// Turns one user's transitions of one dimension into clipped intervals, incrementally.
///
/// Feed the state in force at `from` (if any) and then every transition inside the window with
/// [`IntervalBuilder::push`], in ascending time order; call [`IntervalBuilder::finish`] at the
/// end. Each state lasts until the next transition; the last one until `open_end` (now, or `to`
/// if earlier). Pieces outside the window, or empty after clipping, are dropped.
#[derive(Debug)]
pub struct IntervalBuilder {
    kind: Kind,
    window: Window,
    open: Option<Point>,
}

impl IntervalBuilder {
    /// A builder for one dimension over `window`.
    pub fn new(kind: Kind, window: Window) -> Self {
        IntervalBuilder {
            kind,
            window,
            open: None,
        }
    }

    /// Starts the state of `point`, closing the previous one at `point.at`; returns the closed
    /// interval if it overlaps the window.
    pub fn push(&mut self, point: Point) -> Option<Interval> {
        let closed = self
            .open
            .take()
            .and_then(|previous| self.clip(previous, point.at));
        self.open = Some(point);
        closed
    }

    /// Closes the state still open at `open_end` (see [`Window::open_end`]).
    pub fn finish(mut self, open_end: DateTime<Utc>) -> Option<Interval> {
        let end = open_end.min(self.window.to);
        self.open.take().and_then(|last| self.clip(last, end))
    }

    fn clip(&self, point: Point, end: DateTime<Utc>) -> Option<Interval> {
        let start = point.at.max(self.window.from);
        let end = end.min(self.window.to);
        (start < end).then_some(Interval {
            kind: self.kind,
            state: point.state,
            org_presence: point.org_presence,
            start,
            end,
        })
    }
}

/// All intervals of one dimension at once (tests and small inputs; the API streams through
/// [`IntervalBuilder`]).
pub fn intervals(
    kind: Kind,
    window: Window,
    now: DateTime<Utc>,
    points: impl IntoIterator<Item = Point>,
) -> Vec<Interval> {
    let mut builder = IntervalBuilder::new(kind, window);
    let mut out: Vec<Interval> = points.into_iter().filter_map(|p| builder.push(p)).collect();
    out.extend(builder.finish(window.open_end(now)));
    out
}

/// Splits `[start, end)` at every local midnight of `tz` (DST-aware: a day is 23 or 25 hours
/// long when the clocks change). Returns the local date and the UTC sub-range of each piece, in
/// order.
pub fn split_at_local_midnight(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    tz: Tz,
) -> Vec<(NaiveDate, DateTime<Utc>, DateTime<Utc>)> {
    let mut pieces = Vec::new();
    let mut cursor = start;
    while cursor < end {
        let day = cursor.with_timezone(&tz).date_naive();
        let next = day
            .checked_add_days(Days::new(1))
            .map(|d| local_day_start(d, tz))
            .unwrap_or(end);
        let piece_end = next.min(end);
        pieces.push((day, cursor, piece_end));
        if piece_end <= cursor {
            break; // cannot happen with a sane zone; never loop forever
        }
        cursor = piece_end;
    }
    pieces
}

/// The first instant of local date `day` in `tz`: local midnight, or (when midnight falls in a
/// DST gap, as in zones that switch at 00:00) the first local time after the gap.
pub fn local_day_start(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut local = day.and_time(NaiveTime::MIN);
    // Gaps are at most a few hours; step in 15-minute increments until a local time exists.
    for _ in 0..(4 * 24) {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
            LocalResult::None => local += chrono::Duration::minutes(15),
        }
    }
    Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN))
}

/// How [`TimeInState`] groups its totals; `kind` and `state` are always part of the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grouping {
    /// One row per user.
    pub by_user: bool,
    /// One row per local day (in the zone given to [`TimeInState::new`]).
    pub by_day: bool,
}

/// The key of one time-in-state total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TotalKey {
    /// Set when grouping by user.
    pub user_id: Option<String>,
    /// Local date, set when grouping by day.
    pub day: Option<NaiveDate>,
    /// The dimension.
    pub kind: &'static str,
    /// Normalized state.
    pub state: String,
}

/// Sums interval lengths per [`TotalKey`]. Memory grows with the number of keys (users × days
/// × states), never with the number of transitions.
#[derive(Debug)]
pub struct TimeInState {
    grouping: Grouping,
    tz: Tz,
    totals: BTreeMap<TotalKey, i64>,
}

impl TimeInState {
    /// Empty totals; `tz` decides where days start when grouping by day.
    pub fn new(grouping: Grouping, tz: Tz) -> Self {
        TimeInState {
            grouping,
            tz,
            totals: BTreeMap::new(),
        }
    }

    /// Adds one interval of `user_id`.
    pub fn add(&mut self, user_id: &str, interval: &Interval) {
        let user = self.grouping.by_user.then(|| user_id.to_owned());
        if self.grouping.by_day {
            for (day, start, end) in split_at_local_midnight(interval.start, interval.end, self.tz)
            {
                let key = TotalKey {
                    user_id: user.clone(),
                    day: Some(day),
                    kind: interval.kind.as_str(),
                    state: interval.state.clone(),
                };
                *self.totals.entry(key).or_default() += (end - start).num_milliseconds();
            }
        } else {
            let key = TotalKey {
                user_id: user,
                day: None,
                kind: interval.kind.as_str(),
                state: interval.state.clone(),
            };
            *self.totals.entry(key).or_default() += interval.millis();
        }
    }

    /// The totals in milliseconds, ordered by user, day, kind, state.
    pub fn into_totals(self) -> Vec<(TotalKey, i64)> {
        self.totals.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_timestamp;

    fn ts(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    fn p(state: &str, at: &str) -> Point {
        Point {
            state: state.into(),
            org_presence: None,
            at: ts(at),
        }
    }

    fn window(from: &str, to: &str) -> Window {
        Window {
            from: ts(from),
            to: ts(to),
        }
    }

    fn summary(intervals: &[Interval]) -> Vec<(String, String, String, f64)> {
        intervals
            .iter()
            .map(|i| {
                (
                    i.state.clone(),
                    crate::domain::format_timestamp(i.start),
                    crate::domain::format_timestamp(i.end),
                    i.seconds(),
                )
            })
            .collect()
    }

    #[test]
    fn intervals_are_clipped_to_both_edges_of_the_window() {
        // IDLE began before the window, INTERACTING inside, OFF_QUEUE runs past `to`.
        let w = window("2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z");
        let now = ts("2024-05-02T00:00:00Z");
        let got = intervals(
            Kind::Routing,
            w,
            now,
            [
                p("IDLE", "2024-05-01T09:30:00Z"),
                p("INTERACTING", "2024-05-01T10:15:00.500Z"),
                p("OFF_QUEUE", "2024-05-01T10:45:00Z"),
            ],
        );
        assert_eq!(
            summary(&got),
            [
                (
                    "IDLE".into(),
                    "2024-05-01T10:00:00.000Z".into(),
                    "2024-05-01T10:15:00.500Z".into(),
                    900.5
                ),
                (
                    "INTERACTING".into(),
                    "2024-05-01T10:15:00.500Z".into(),
                    "2024-05-01T10:45:00.000Z".into(),
                    1799.5
                ),
                (
                    "OFF_QUEUE".into(),
                    "2024-05-01T10:45:00.000Z".into(),
                    "2024-05-01T11:00:00.000Z".into(),
                    900.0
                ),
            ]
        );
        let total: i64 = got.iter().map(Interval::millis).sum();
        assert_eq!(total, 3_600_000, "the window is covered exactly once");
    }

    #[test]
    fn an_open_interval_ends_at_now_when_now_is_before_to() {
        let w = window("2024-05-01T10:00:00Z", "2024-05-01T12:00:00Z");
        let got = intervals(
            Kind::Presence,
            w,
            ts("2024-05-01T10:30:00Z"),
            [p("AVAILABLE", "2024-05-01T10:10:00Z")],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seconds(), 1200.0);
    }

    #[test]
    fn no_state_before_the_first_transition_and_nothing_after_now() {
        let w = window("2024-05-01T10:00:00Z", "2024-05-01T12:00:00Z");
        // Now before `from`: nothing at all.
        assert!(
            intervals(
                Kind::Routing,
                w,
                ts("2024-05-01T09:00:00Z"),
                [p("IDLE", "2024-05-01T08:00:00Z")]
            )
            .is_empty()
        );
        // Transitions only before the window, the last one still in force.
        let got = intervals(
            Kind::Routing,
            w,
            ts("2024-05-03T00:00:00Z"),
            [p("IDLE", "2024-05-01T08:00:00Z")],
        );
        assert_eq!(got[0].seconds(), 7200.0);
        // Nothing known: no interval, the gap before the first transition stays empty.
        let got = intervals(
            Kind::Routing,
            w,
            ts("2024-05-03T00:00:00Z"),
            [p("IDLE", "2024-05-01T11:00:00Z")],
        );
        assert_eq!(summary(&got)[0].1, "2024-05-01T11:00:00.000Z");
        assert_eq!(got[0].seconds(), 3600.0);
    }

    #[test]
    fn equal_timestamps_yield_no_empty_interval() {
        let w = window("2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z");
        let got = intervals(
            Kind::Routing,
            w,
            ts("2024-05-01T10:01:00Z"),
            [
                p("IDLE", "2024-05-01T10:00:00Z"),
                p("INTERACTING", "2024-05-01T10:00:00Z"),
            ],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].state, "INTERACTING");
    }

    #[test]
    fn days_split_at_local_midnight_across_dst_changes() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // Spring forward: 2024-03-31 lasts 23 hours in Berlin (00:00 CET = 23:00Z the day before).
        let pieces = split_at_local_midnight(
            ts("2024-03-30T22:00:00Z"), // 23:00 CET on the 30th
            ts("2024-04-01T00:00:00Z"), // 02:00 CEST on 1 April
            berlin,
        );
        let lengths: Vec<(String, i64)> = pieces
            .iter()
            .map(|(d, s, e)| (d.to_string(), (*e - *s).num_seconds()))
            .collect();
        assert_eq!(
            lengths,
            [
                ("2024-03-30".into(), 3600),
                ("2024-03-31".into(), 23 * 3600),
                ("2024-04-01".into(), 2 * 3600),
            ]
        );
        // Fall back: 2024-10-27 lasts 25 hours.
        let pieces = split_at_local_midnight(
            ts("2024-10-26T22:00:00Z"), // 00:00 CEST on the 27th
            ts("2024-10-27T23:00:00Z"), // 00:00 CET on the 28th
            berlin,
        );
        assert_eq!(pieces.len(), 1);
        assert_eq!((pieces[0].2 - pieces[0].1).num_hours(), 25);
    }

    #[test]
    fn a_day_that_starts_after_a_midnight_gap() {
        // America/Santiago springs forward at 24:00 -> 01:00 (2024-09-08 has no 00:00).
        let santiago: Tz = "America/Santiago".parse().unwrap();
        let start = local_day_start(NaiveDate::from_ymd_opt(2024, 9, 8).unwrap(), santiago);
        assert_eq!(
            crate::domain::format_timestamp(start),
            "2024-09-08T04:00:00.000Z"
        );
    }

    #[test]
    fn time_in_state_by_day_in_a_zone_and_by_user() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let w = window("2024-05-01T00:00:00Z", "2024-05-03T00:00:00Z");
        // u1 IDLE from 2024-05-01T22:00-04:00 (02:00Z on the 2nd) to 05:00Z: 2 h on 1 May
        // local, 1 h on 2 May local.
        let u1 = intervals(
            Kind::Routing,
            w,
            ts("2024-06-01T00:00:00Z"),
            [
                p("IDLE", "2024-05-02T02:00:00Z"),
                p("OFF_QUEUE", "2024-05-02T05:00:00Z"),
            ],
        );
        let mut by_day = TimeInState::new(
            Grouping {
                by_user: false,
                by_day: true,
            },
            ny,
        );
        for i in &u1 {
            by_day.add("u1", i);
        }
        let rows: Vec<(String, String, i64)> = by_day
            .into_totals()
            .into_iter()
            .map(|(k, ms)| (k.day.unwrap().to_string(), k.state, ms / 1000))
            .collect();
        assert_eq!(
            rows,
            [
                ("2024-05-01".into(), "IDLE".into(), 7200),
                ("2024-05-02".into(), "IDLE".into(), 3600),
                // 05:00Z on the 2nd (01:00 local) to 00:00Z on the 3rd (20:00 local on the 2nd).
                ("2024-05-02".into(), "OFF_QUEUE".into(), 19 * 3600),
            ]
        );

        let mut by_user = TimeInState::new(
            Grouping {
                by_user: true,
                by_day: false,
            },
            chrono_tz::UTC,
        );
        for i in &u1 {
            by_user.add("u1", i);
        }
        by_user.add(
            "u2",
            &Interval {
                kind: Kind::Routing,
                state: "IDLE".into(),
                org_presence: None,
                start: ts("2024-05-01T00:00:00Z"),
                end: ts("2024-05-01T00:00:01.250Z"),
            },
        );
        let rows: Vec<(String, String, i64)> = by_user
            .into_totals()
            .into_iter()
            .map(|(k, ms)| (k.user_id.unwrap(), k.state, ms))
            .collect();
        assert_eq!(
            rows,
            [
                ("u1".into(), "IDLE".into(), 3 * 3_600_000),
                ("u1".into(), "OFF_QUEUE".into(), 19 * 3_600_000),
                ("u2".into(), "IDLE".into(), 1250),
            ]
        );
    }
}
