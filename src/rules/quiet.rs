//! Quiet hours: time-zoned weekly windows during which no alert message is sent.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;

/// A local time of day in minutes since midnight, 0..=1440 (1440 is `24:00`, only as a window
/// end).
pub type Minutes = u16;

/// One quiet-hours block of a rule: in time zone `time_zone`, on `days`, during any of
/// `windows`.
///
/// **Convention: a window belongs to the day on which it starts.** A window whose end is not
/// after its start (`22:00-06:00`) crosses midnight and continues on the next day until its
/// end: with `days = ["fri"]`, `22:00-06:00` covers Friday 22:00 to Saturday 06:00 (so
/// Saturday 03:00 is quiet) but not Thursday night. Windows are half-open: start included, end
/// excluded. Times are wall-clock times in the zone, so DST is honoured (a window `18:00-08:00`
/// ends at 08:00 local time on both sides of a DST change). On a spring-forward day a window
/// starting in the skipped hour begins when the clock jumps past its start; on a fall-back
/// day a repeated hour inside a window is quiet both times.
#[derive(Debug, Clone, PartialEq)]
pub struct QuietHours {
    /// IANA time zone (e.g. `Europe/Paris`).
    pub time_zone: Tz,
    /// The days on which windows start; all seven when not given in the file.
    pub days: Vec<Weekday>,
    /// `(start, end)` in minutes since local midnight; `end <= start` crosses midnight.
    /// `start` is 0..1440, `end` 0..=1440, never equal.
    pub windows: Vec<(Minutes, Minutes)>,
}

impl QuietHours {
    /// Whether the instant `at` (UTC) falls in one of the windows, in the block's time zone.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.time_zone);
        let minute = (local.hour() * 60 + local.minute()) as Minutes;
        let today = local.weekday();
        let yesterday = (local.date_naive() - ChronoDuration::days(1)).weekday();
        self.windows.iter().any(|&(start, end)| {
            if start < end {
                self.days.contains(&today) && start <= minute && minute < end
            } else {
                (self.days.contains(&today) && minute >= start)
                    || (self.days.contains(&yesterday) && minute < end)
            }
        })
    }
}

/// Parses a day of the week: `mon`, `Monday`, `MON`, … (English, case-insensitive).
pub fn parse_weekday(raw: &str) -> Option<Weekday> {
    let lower = raw.trim().to_ascii_lowercase();
    let day = match lower.get(..3)? {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    };
    let full = match day {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    };
    (lower.len() == 3 || lower == full).then_some(day)
}

/// Parses a window `HH:MM-HH:MM` (24-hour clock; the end may be `24:00`). Errors say what is
/// wrong, for the validation report.
pub fn parse_window(raw: &str) -> Result<(Minutes, Minutes), String> {
    let (start, end) = raw
        .split_once('-')
        .ok_or_else(|| format!("time window {raw:?} is not of the form \"HH:MM-HH:MM\""))?;
    let start = parse_time(start.trim(), false)
        .ok_or_else(|| format!("time window {raw:?}: start {start:?} is not a time HH:MM"))?;
    let end = parse_time(end.trim(), true)
        .ok_or_else(|| format!("time window {raw:?}: end {end:?} is not a time HH:MM"))?;
    if start == end {
        return Err(format!(
            "time window {raw:?} is empty (start equals end); use \"00:00-24:00\" for a whole day"
        ));
    }
    Ok((start, end))
}

fn parse_time(raw: &str, allow_24: bool) -> Option<Minutes> {
    if allow_24 && raw == "24:00" {
        return Some(1440);
    }
    let (h, m) = raw.split_once(':')?;
    if h.is_empty()
        || h.len() > 2
        || m.len() != 2
        || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let t = NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)?;
    Some((t.hour() * 60 + t.minute()) as Minutes)
}
