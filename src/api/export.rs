//! What the history and report endpoints share: time-window parameters, the JSON/CSV choice,
//! and CSV bodies streamed page by page.

use std::future::Future;

use chrono::{DateTime, Utc};
use poem::Body;
use tokio::sync::mpsc;

use super::ApiError;
use crate::domain::parse_timestamp;

/// Rows fetched per database round trip while streaming an export.
pub(crate) const EXPORT_PAGE_ROWS: u64 = 1000;

/// Chunks buffered between the producer and the socket: a slow client stalls the producer
/// instead of growing memory.
const BUFFERED_CHUNKS: usize = 2;

/// The representation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
}

/// `format=json|csv` wins; without it, an `Accept` header naming `text/csv` selects CSV.
pub(crate) fn negotiate(format: Option<&str>, accept: Option<&str>) -> Result<Format, ApiError> {
    match format.map(|f| f.trim().to_ascii_lowercase()) {
        Some(f) if f == "json" => Ok(Format::Json),
        Some(f) if f == "csv" => Ok(Format::Csv),
        Some(_) => Err(ApiError::BadRequest(format!(
            "format must be json or csv, got {:?}",
            format.unwrap_or_default()
        ))),
        None => {
            let wants_csv = accept.is_some_and(|a| {
                a.split(',').any(|m| {
                    m.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv"))
                })
            });
            Ok(if wants_csv { Format::Csv } else { Format::Json })
        }
    }
}

/// Parses the RFC 3339 instant of parameter `name`.
pub(crate) fn parse_instant(name: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_timestamp(raw).map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} must be an RFC 3339 instant with a zone (2024-05-01T00:00:00Z), got {raw:?}"
        ))
    })
}

/// An optional instant parameter.
pub(crate) fn parse_optional_instant(
    name: &str,
    raw: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|r| parse_instant(name, r)).transpose()
}

/// `from` must not be after `to`, and `[from, to)` must not exceed `max_window`.
pub(crate) fn check_window(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max_window: std::time::Duration,
) -> Result<(), ApiError> {
    if from > to {
        return Err(ApiError::BadRequest(format!(
            "from ({}) must not be after to ({})",
            crate::domain::format_timestamp(from),
            crate::domain::format_timestamp(to)
        )));
    }
    let span = (to - from).to_std().unwrap_or_default();
    if span > max_window {
        return Err(ApiError::BadRequest(format!(
            "the window from..to is {} long; the maximum is {} (MAX_REPORT_WINDOW / \
             --max-report-window): ask for a shorter window",
            in_days(span),
            in_days(max_window)
        )));
    }
    Ok(())
}

/// A window length for people: whole days as `366 days`, else days and the rest
/// (`2 days 3h 20m`), or just `3h 20m` below a day.
fn in_days(span: std::time::Duration) -> String {
    const DAY: u64 = 86_400;
    let secs = span.as_secs();
    let (days, rest) = (secs / DAY, std::time::Duration::from_secs(secs % DAY));
    let unit = if days == 1 { "day" } else { "days" };
    match (days, rest.is_zero()) {
        (0, _) => humantime::format_duration(rest).to_string(),
        (_, true) => format!("{days} {unit}"),
        (_, false) => format!("{days} {unit} {}", humantime::format_duration(rest)),
    }
}

/// Serializes records (the header first, when given) with the `csv` crate's quoting.
pub(crate) fn csv_chunk<'a, I, R>(header: Option<&[&str]>, records: I) -> Vec<u8>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = &'a str>,
{
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    if let Some(header) = header {
        let _ = writer.write_record(header);
    }
    for record in records {
        let _ = writer.write_record(record);
    }
    writer.into_inner().unwrap_or_default()
}

/// Where a streaming producer sends CSV chunks. `send` fails once the client has gone away, so
/// the producer stops reading the database.
pub(crate) struct ChunkSender(mpsc::Sender<Result<Vec<u8>, std::io::Error>>);

/// The client closed the connection; stop producing.
#[derive(Debug)]
pub(crate) struct ClientGone;

impl ChunkSender {
    pub(crate) async fn send(&self, chunk: Vec<u8>) -> Result<(), ClientGone> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.0.send(Ok(chunk)).await.map_err(|_| ClientGone)
    }
}

/// Why a producer stopped early.
pub(crate) enum StreamEnd {
    ClientGone,
    Failed(ApiError),
}

impl From<ClientGone> for StreamEnd {
    fn from(_: ClientGone) -> Self {
        StreamEnd::ClientGone
    }
}

impl From<ApiError> for StreamEnd {
    fn from(err: ApiError) -> Self {
        StreamEnd::Failed(err)
    }
}

impl From<sea_orm::DbErr> for StreamEnd {
    fn from(err: sea_orm::DbErr) -> Self {
        StreamEnd::Failed(err.into())
    }
}

/// A body fed by `produce` running as its own task, chunk by chunk with backpressure. A
/// database error after the headers went out ends the body with an error, and the server
/// ([`super::serve`]) closes the connection without the closing chunk: the client sees a
/// truncated chunked response, never a silently short file. The error is logged.
pub(crate) fn streamed_body<F, Fut>(produce: F) -> Body
where
    F: FnOnce(ChunkSender) -> Fut,
    Fut: Future<Output = Result<(), StreamEnd>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFERED_CHUNKS);
    let failure = tx.clone();
    let work = produce(ChunkSender(tx));
    tokio::spawn(async move {
        if let Err(StreamEnd::Failed(err)) = work.await {
            tracing::error!(error = %err, "CSV export failed part-way; aborting the response");
            let _ = failure
                .send(Err(std::io::Error::other(err.to_string())))
                .await;
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Body::from_bytes_stream(chunks)
}

/// A `Option<String>` cell as CSV text (empty when absent).
pub(crate) fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_chosen_by_format_or_accept() {
        assert_eq!(negotiate(None, None).unwrap(), Format::Json);
        assert_eq!(negotiate(Some("CSV"), None).unwrap(), Format::Csv);
        assert_eq!(
            negotiate(Some("json"), Some("text/csv")).unwrap(),
            Format::Json
        );
        assert_eq!(
            negotiate(None, Some("application/json;q=0.5, text/csv")).unwrap(),
            Format::Csv
        );
        assert!(
            negotiate(Some("xml"), None)
                .unwrap_err()
                .to_string()
                .starts_with("format ")
        );
    }

    #[test]
    fn windows_are_checked() {
        let t = |s: &str| parse_timestamp(s).unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert!(check_window(t("2024-05-01T00:00:00Z"), t("2024-05-02T00:00:00Z"), day).is_ok());
        let err = check_window(t("2024-05-02T00:00:00Z"), t("2024-05-01T00:00:00Z"), day)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("from "), "{err}");
        let err = check_window(t("2024-05-01T00:00:00Z"), t("2024-05-03T00:00:00Z"), day)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is 2 days long; the maximum is 1 day (MAX_REPORT_WINDOW"),
            "{err}"
        );
        assert_eq!(
            in_days(std::time::Duration::from_secs(366 * 86_400)),
            "366 days"
        );
        assert_eq!(
            in_days(std::time::Duration::from_secs(86_400 + 3600)),
            "1 day 1h"
        );
        assert_eq!(in_days(std::time::Duration::from_secs(5400)), "1h 30m");
    }

    #[test]
    fn csv_cells_are_quoted() {
        let chunk = csv_chunk(Some(&["a", "b"]), [["x,y", "say \"hi\""]]);
        assert_eq!(
            String::from_utf8(chunk).unwrap(),
            "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n"
        );
    }
}
