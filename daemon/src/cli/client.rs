//! `edgecap publish` and `edgecap status`: clients of the ingest socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value as Json};

use super::EXIT_UNREACHABLE;

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[arg(long)]
    pub socket: PathBuf,
    /// Source name (`[A-Za-z0-9_.:-]{1,64}`); required unless VALUE is `-`.
    #[arg(long)]
    pub source: Option<String>,
    /// `sensor` (the default) or `command`. Anything else is sent as given, so the daemon's
    /// refusal is the reply (exit 1), as for any other rejected field.
    #[arg(long, value_name = "sensor|command")]
    pub kind: Option<String>,
    /// The value as JSON text (`21.5`, `-3`, `'"open"'`, `'{"a":1}'`), or `-` to read request
    /// lines from stdin.
    #[arg(allow_negative_numbers = true)]
    pub value: String,
}

fn connect(socket: &Path) -> Result<UnixStream, ExitCode> {
    UnixStream::connect(socket).map_err(|e| {
        eprintln!(
            "edgecap: cannot reach the daemon at {}: {e}",
            socket.display()
        );
        ExitCode::from(EXIT_UNREACHABLE)
    })
}

/// Whether a reply line is a success: `"ok":true`, or a control reply (status, state), which
/// has no `ok` key. Anything unparsable counts as a failure.
fn reply_ok(line: &str) -> bool {
    match serde_json::from_str::<Json>(line) {
        Ok(Json::Object(map)) => map.get("ok").is_none_or(|ok| ok == &Json::Bool(true)),
        _ => false,
    }
}

pub fn publish(args: PublishArgs) -> ExitCode {
    if args.value == "-" {
        return publish_stdin(&args.socket);
    }
    let Some(source) = args.source else {
        eprintln!("edgecap: --source is required when VALUE is not `-`");
        return ExitCode::FAILURE;
    };
    let value: Json = match serde_json::from_str(&args.value) {
        Ok(value) => value,
        Err(e) => {
            // Refused here as the daemon would refuse it: a reply line naming the field.
            let error = format!("field `value` is not JSON ({e}); quote strings: '\"text\"'");
            println!("{}", json!({"ok": false, "error": error}));
            return ExitCode::FAILURE;
        }
    };
    let mut request = json!({"source": source, "value": value});
    if let Some(kind) = args.kind {
        request["kind"] = Json::String(kind);
    }
    let stream = match connect(&args.socket) {
        Ok(stream) => stream,
        Err(code) => return code,
    };
    let mut writer = &stream;
    if writer.write_all(format!("{request}\n").as_bytes()).is_err() {
        eprintln!("edgecap: the daemon closed the connection");
        return ExitCode::from(EXIT_UNREACHABLE);
    }
    let mut line = String::new();
    match BufReader::new(&stream).read_line(&mut line) {
        Ok(n) if n > 0 => {
            let line = line.trim_end();
            println!("{line}");
            if reply_ok(line) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!("edgecap: no reply from the daemon");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// Pipelines stdin's lines: one thread writes requests while this one prints the replies.
fn publish_stdin(socket: &Path) -> ExitCode {
    let stream = match connect(socket) {
        Ok(stream) => stream,
        Err(code) => return code,
    };
    let write_half = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgecap: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut out = std::io::BufWriter::new(&write_half);
        let mut input = BufReader::new(std::io::stdin().lock());
        let mut line = Vec::new();
        let mut sent = 0u64;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if !text.iter().all(u8::is_ascii_whitespace) {
                out.write_all(text)?;
                out.write_all(b"\n")?;
                sent += 1;
            }
            // Nothing more to read without waiting: send what we have, or a producer writing
            // a line now and then would see its events held back until 8 KiB piled up.
            if input.buffer().is_empty() {
                out.flush()?;
            }
        }
        out.flush()?;
        drop(out);
        write_half.shutdown(std::net::Shutdown::Write)?;
        Ok(sent)
    });
    let mut all_ok = true;
    let mut received = 0u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in BufReader::new(&stream).lines() {
        let Ok(line) = line else { break };
        all_ok &= reply_ok(&line);
        received += 1;
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    match sender.join() {
        Ok(Ok(sent)) if sent == received => {}
        Ok(Ok(sent)) => {
            eprintln!("edgecap: sent {sent} requests but received {received} replies");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
        _ => {
            eprintln!("edgecap: the daemon closed the connection");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn status(socket: &Path, as_json: bool) -> ExitCode {
    let stream = match connect(socket) {
        Ok(stream) => stream,
        Err(code) => return code,
    };
    let mut writer = &stream;
    let mut line = String::new();
    let ok = writer.write_all(b"{\"op\":\"status\"}\n").is_ok()
        && BufReader::new(&stream)
            .read_line(&mut line)
            .is_ok_and(|n| n > 0);
    if !ok {
        eprintln!("edgecap: no status reply from the daemon");
        return ExitCode::from(EXIT_UNREACHABLE);
    }
    if as_json {
        println!("{}", line.trim_end());
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<Json>(&line) {
        Ok(Json::Object(map)) => {
            for (key, value) in map {
                println!("{key:<16} {value}");
            }
        }
        _ => println!("{}", line.trim_end()),
    }
    ExitCode::SUCCESS
}

/// `edgecap log follow`: prints events as the daemon streams them, until EOF.
pub fn follow(
    socket: &Path,
    from: Option<u64>,
    kind: Option<String>,
    source: Option<String>,
) -> ExitCode {
    let stream = match connect(socket) {
        Ok(stream) => stream,
        Err(code) => return code,
    };
    let mut request = json!({"op": "follow", "from": from.unwrap_or(1)});
    if let Some(kind) = kind {
        request["kind"] = Json::String(kind);
    }
    if let Some(source) = source {
        request["source"] = Json::String(source);
    }
    let mut writer = &stream;
    if writer.write_all(format!("{request}\n").as_bytes()).is_err() {
        eprintln!("edgecap: the daemon closed the connection");
        return ExitCode::from(EXIT_UNREACHABLE);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in BufReader::new(&stream).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("{\"ok\":false") {
            eprintln!("edgecap: {line}");
            return ExitCode::FAILURE;
        }
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}
