//! `fba_client <port> [command]`: talk to one node of the wallet store.
//!
//! With no command it sends the assignment's six requests in order. Otherwise one command
//! (`set foo 10`, `deposit foo 5`, `withdraw foo 5`, `get foo`), or `--file` with one
//! command per line (`-` for standard input). Each reply is printed with the id of the
//! node that sent it. Exit status: 0 when every request succeeded, 2 when the wallet
//! refused one (e.g. insufficient funds), 1 when a node did not answer or input was bad.

use clap::Parser;
use fba::client::{Client, ASSIGNMENT_REQUESTS};
use fba::wallet::{parse_text, Op};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "fba_client", version, about = "Send wallet requests to an fba node")]
struct Args {
    /// UDP port of the node to talk to.
    port: u16,
    /// One command, e.g. `set foo 10`, `deposit foo 5`, `withdraw foo 5`, `get foo`.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    command: Vec<String>,
    /// Host of the node.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Read commands from a file, one per line (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "command")]
    file: Option<PathBuf>,
    /// Milliseconds to wait for a reply before sending the request again.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// How many times to send a request before giving up.
    #[arg(long, default_value_t = 20)]
    attempts: u32,
}

fn commands(args: &Args) -> Result<Vec<String>, String> {
    if let Some(path) = &args.file {
        let mut text = String::new();
        let read = if path.as_os_str() == "-" {
            std::io::stdin().lock().read_to_string(&mut text)
        } else {
            std::fs::File::open(path).and_then(|f| std::io::BufReader::new(f).read_to_string(&mut text))
        };
        read.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect());
    }
    if args.command.is_empty() {
        return Ok(ASSIGNMENT_REQUESTS.iter().map(|s| s.to_string()).collect());
    }
    Ok(vec![args.command.join(" ")])
}

fn main() -> ExitCode {
    let args = Args::parse();
    let lines = match commands(&args) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("fba_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ops: Result<Vec<Op>, String> =
        lines.iter().map(|l| parse_text(l).map_err(|e| format!("bad command {l:?}: {e}"))).collect();
    let ops = match ops {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("fba_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = SocketAddr::new(args.host, args.port);
    let mut client = match Client::new(server) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fba_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    client.timeout = Duration::from_millis(args.timeout_ms.max(1));
    client.attempts = args.attempts.max(1);
    let mut refused = false;
    for (line, op) in lines.iter().zip(ops) {
        match client.call(op) {
            Ok((node, reply)) => {
                println!("[{node}] {line} -> {reply}");
                refused |= !reply.outcome.is_ok();
            }
            Err(e) => {
                eprintln!("fba_client: {line}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if refused {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
