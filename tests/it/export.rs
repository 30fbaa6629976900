//! CSV exports that fail after their first chunks went out, on the real service: the client
//! must see a broken transfer, never a chunked body that ends like a complete file.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::wait_for;
use crate::service::{Harness, Opts};

/// Rows copied into `agent_status`, each with a 500-byte `user_name`: about 20 MB of CSV,
/// several times what the socket buffers, hyper and the export's channel hold together, so
/// the export cannot finish while the client does not read.
const ROWS: u64 = 30_000;

/// Generous: debug builds on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The history export is streaming when its table disappears: the server must end the
/// connection without the terminating zero-length chunk (curl exit 18), as documented on
/// `streamed_body`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_export_failing_part_way_is_cut_off_without_the_final_chunk() {
    let h = Harness::start(Opts {
        agents: 1,
        ..Opts::default()
    })
    .await;
    let db = h.app.db();
    let backend = db.get_database_backend();
    let sql = |text: String| Statement::from_string(backend, text);
    // Copies of one stored row (its timestamps in the stored format), each with its own user.
    wait_for("a stored row", DEADLINE, || async {
        (h.sql_count("SELECT COUNT(*) FROM agent_status").await > 0).then_some(())
    })
    .await;
    db.execute_raw(sql(format!(
        "INSERT INTO agent_status (user_id, user_name, kind, state, previous_state, \
         org_presence, presence_definition_id, event_timestamp, ingested_at, source) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         SELECT 'bulk-' || i, replace(hex(zeroblob(250)), '0', 'x'), kind, state, \
         previous_state, org_presence, presence_definition_id, event_timestamp, ingested_at, \
         source FROM n, (SELECT * FROM agent_status LIMIT 1)"
    )))
    .await
    .unwrap();

    // A client that reads slowly: a small receive buffer stalls the export on backpressure.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(h.app.api_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /api/v1/agent-status/history?format=csv HTTP/1.1\r\n\
              Host: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 4096];
    let head_end = tokio::time::timeout(DEADLINE, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before the first rows");
            raw.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&raw, b"\r\n\r\n")
                && raw.len() > end + 4 + 1024
            {
                return end + 4;
            }
        }
    })
    .await
    .expect("the head and the first rows");
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");

    // The export is part-way through; its table goes away.
    db.execute_raw(sql("DROP TABLE agent_status".into()))
        .await
        .unwrap();

    // Read to the end: EOF, or a reset once the server dropped the connection.
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server ended the response");
    let (body, complete) = dechunk(&raw[head_end..]);
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    assert!(
        body.starts_with(b"id,user_id,"),
        "{:?}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    assert!(
        !complete,
        "the failed export ended with the terminating chunk, like a complete file \
         ({lines} CSV lines arrived; the table had over {ROWS} rows)"
    );
    h.app.shutdown().await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body: the data, and whether the terminating zero-length chunk came.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return (data, false);
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            return (data, true);
        }
        if raw.len() < size + 2 {
            data.extend_from_slice(&raw[..raw.len().min(size)]);
            return (data, false);
        }
        data.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
