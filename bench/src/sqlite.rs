//! SQLite in WAL mode, the store most spoolers use (NanoMQ, Greengrass, ThingsBoard's gateway):
//! the same 105-byte payload as a BLOB, one transaction per batch, `synchronous = FULL` (durable
//! at commit, like edgecap's `sync_through`) and `NORMAL` (durable at checkpoint only). And what
//! producers writing SQLite themselves get: N processes, each inserting one row per transaction
//! into one database, as `__sqlite-writer` children of this binary.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::stats::rate;

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)";
const INSERT: &str = "INSERT INTO events (payload) VALUES (?1)";

/// A WAL database at `path` with `synchronous` (`FULL` or `NORMAL`); writers wait for the lock.
pub fn open(path: &Path, synchronous: &str) -> Connection {
    let conn = Connection::open(path).unwrap_or_else(|e| panic!("sqlite {}: {e}", path.display()));
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .expect("set WAL mode");
    assert_eq!(mode.to_lowercase(), "wal", "SQLite refused WAL mode");
    conn.execute_batch(&format!("PRAGMA synchronous={synchronous}; {SCHEMA}"))
        .expect("configure the bench database");
    conn.busy_timeout(Duration::from_secs(60))
        .expect("busy timeout");
    conn
}

/// Rows/s of one connection committing a transaction every `batch` rows.
pub fn batch(dir: &Path, events: u64, batch: u64, synchronous: &str) -> f64 {
    let mut conn = open(&dir.join(format!("batch-{synchronous}.db")), synchronous);
    let payload = crate::storage::probe_payload();
    let start = Instant::now();
    let mut done = 0;
    while done < events {
        let n = batch.min(events - done);
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx.prepare_cached(INSERT).expect("prepare");
            for _ in 0..n {
                insert.execute(params![payload]).expect("insert");
            }
        }
        tx.commit().expect("commit");
        done += n;
    }
    rate(events, start.elapsed())
}

/// Rows/s of `processes` writer processes, each inserting `events / processes` rows one per
/// `synchronous = FULL` transaction into one database.
pub fn direct_processes(dir: &Path, processes: u64, events: u64) -> f64 {
    let db = dir.join(format!("direct-{processes}.db"));
    drop(open(&db, "FULL"));
    let per_process = (events / processes).max(1);
    let writers: Vec<_> = (0..processes)
        .map(|_| Writer::spawn(&db, per_process, 0))
        .collect();
    let start = Instant::now();
    for writer in writers.iter() {
        writer.go();
    }
    for writer in writers {
        writer.wait();
    }
    rate(per_process * processes, start.elapsed())
}

/// One `__sqlite-writer` child: ready when spawned, starts on `go`, ends on its own.
pub struct Writer {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Writer {
    /// `rows_per_s` 0: as fast as it can.
    pub fn spawn(db: &Path, rows: u64, rows_per_s: u64) -> Writer {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("__sqlite-writer")
            .arg(db)
            .arg(rows.to_string())
            .arg(rows_per_s.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a SQLite writer");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("writer ready");
        assert_eq!(line.trim(), "ready", "the SQLite writer did not start");
        Writer { child, stdout }
    }

    pub fn go(&self) {
        let mut stdin = self.child.stdin.as_ref().expect("piped");
        stdin.write_all(b"go\n").expect("start the writer");
    }

    /// Waits for the end.
    pub fn wait(mut self) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("writer result");
        assert_eq!(line.trim(), "done", "the SQLite writer failed");
        let status = self.child.wait().expect("writer exit");
        assert!(status.success(), "a SQLite writer failed: {status}");
    }
}

/// The child's side: `__sqlite-writer DB ROWS ROWS_PER_S`.
pub fn writer_main(args: &[String]) -> std::process::ExitCode {
    let [db, rows, rows_per_s] = args else {
        eprintln!("usage: __sqlite-writer DB ROWS ROWS_PER_S");
        return std::process::ExitCode::from(2);
    };
    let rows: u64 = rows.parse().expect("ROWS");
    let rows_per_s: u64 = rows_per_s.parse().expect("ROWS_PER_S");
    let conn = open(Path::new(db), "FULL");
    let payload = crate::storage::probe_payload();
    let mut insert = conn.prepare(INSERT).expect("prepare");
    println!("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("go");
    let pace = crate::daemon::Pace::new(rows_per_s);
    for i in 0..rows {
        pace.wait_turn(i);
        insert.execute(params![payload]).expect("insert");
    }
    println!("done");
    std::process::ExitCode::SUCCESS
}
