//! `fba_client <port> [command]`: talk to the wallet store. See `--help`.
//!
//! With no command it sends the assignment's six requests in order. Otherwise one command
//! (`set foo 10`, `deposit foo 5`, `withdraw foo 5`, `transfer alice bob 5`, `get foo`), or
//! `--file` with one command per line (`-` for standard input). Each reply is printed with
//! the id of the node that sent it (`--json`: one JSON object per reply).
//!
//! `fba_client keygen [--out FILE]` creates a client key; `--key FILE` signs with it.
//!
//! `fba_client PORT status [--all] [--json]` asks the node (`--all`: every node it names as
//! a peer, and every `--peer`) for its status ([`fba::client::status`]); exit 0 when every
//! node asked answered, 3 otherwise.
//!
//! The client keeps its identity, session, next sequence number and the request whose
//! reply has not come in a state file ([`fba::client::state`]), written before a request
//! is first sent; a re-run first resends that request, unchanged, so a command whose
//! outcome was unknown is applied at most once however often it is re-run. Each run
//! registers a new session (a session is reused only to resend a pending request), since a
//! cluster started afresh would refuse every request naming an old one.
//!
//! Exit status: 0 every request succeeded; 1 the wallet (or a node) refused one; 2 usage
//! or local error (bad command line or input, key or state file problem); 3 outcome
//! unknown (no node answered: the request may still be applied; re-run to resend it);
//! 4 unavailable (a node answered that it cannot reach a quorum: nothing was applied).

use clap::Parser;
use fba::client::keyfile;
use fba::client::state::{ClientState, Pending, StateFile};
use fba::client::{self as lib, reconfigure, status, Client, ClientError, Progress, ASSIGNMENT_REQUESTS};
use fba::quorum::NodeId;
use fba::wallet::{parse_text, ClientKey, Op, Ops, Outcome, Reply, Request, TEXT_CLIENT_BIT};
use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Prints a line on standard output. A closed standard output (its reader went away, as
/// with `| head`) ends the program quietly with status 141, as SIGPIPE ends other
/// commands; a request in flight is still in the state file, so the next run resends it.
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*))
    };
}

fn write_out(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("fba_client: cannot write to standard output: {e}");
        std::process::exit(74);
    }
}

/// Every request succeeded.
const EXIT_OK: u8 = 0;
/// The wallet (or a node) refused a request.
const EXIT_REFUSED: u8 = 1;
/// Bad command line or input, or a local problem (key, state file, socket).
const EXIT_USAGE: u8 = 2;
/// No node answered: the request may still be applied.
const EXIT_UNKNOWN: u8 = 3;
/// A node answered that it cannot reach a quorum: nothing was applied.
const EXIT_UNAVAILABLE: u8 = 4;

/// How many times a request is sent to each node, by default.
const DEFAULT_ATTEMPTS: u32 = 20;
/// How many times a status request is sent to each node, by default.
const STATUS_ATTEMPTS: u32 = 4;

const AFTER_HELP: &str = "\
Commands: set KEY AMOUNT | deposit KEY AMOUNT | withdraw KEY AMOUNT | transfer FROM TO AMOUNT | \
get KEY | KEY:AMOUNT. Options go before the command.

`fba_client PORT reconfigure [--add [ID@]IP:PORT]... [--remove ID]... [--threshold T]` changes the \
cluster's membership through consensus, from the node's current configuration (without \
--threshold: the smallest above two thirds); `reconfigure THRESHOLD ID@IP:PORT...` gives the whole \
new configuration. It takes effect at the next slot on every node; an unsafe one (two quorums \
that need not intersect) is refused (exit 1). An authenticated cluster obeys only its operators \
(`fba_server keygen --operator CLIENT_ID`; sign with --key) and adds only nodes its key files name.

`fba_client PORT status [--all] [--json]` shows the node's slot, ledger hash, lag, quorum, pool, \
requests/s, uptime and peers; `--all` asks every node it can reach (the node's peers and any \
--peer) and prints one table. Exit 0 when every node asked answered, 3 otherwise.

`fba_client keygen [--out FILE]` creates a client key (default $FBA_CLIENT_HOME/client.key; \
FBA_CLIENT_HOME defaults to ~/.fba); `--key FILE` signs every request with it.

State: the client id, session, next sequence number and the request whose reply has not come \
are kept in FILE.state beside the key (without --key: $FBA_CLIENT_HOME/dev-<ip>-<port>.state, \
deleted when nothing is pending), written before a request is sent. A run first resends that \
request unchanged: re-running the same command is its retry and applies it at most once; a \
different command runs after it (the earlier one's reply is shown on standard error as \
`(previous command)`).

Exit status: 0 success; 1 refused by the wallet; 2 usage or local error; 3 outcome unknown \
(no answer: the request may still be applied; re-run the same command to resend it); \
4 unavailable (a node cannot reach a quorum: nothing was applied).";

#[derive(Parser, Debug)]
#[command(name = "fba_client", version, about = "Send wallet requests to fba nodes", after_help = AFTER_HELP)]
struct Args {
    /// UDP port of the node to talk to.
    port: u16,
    /// One command, e.g. `set foo 10`, `deposit foo 5`, `transfer alice bob 5`, `get foo`.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    command: Vec<String>,
    /// Host of the node: an IP address or a name.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Another node to try, with the same request, when the first does not answer (repeat).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Read commands from a file, one per line (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "command")]
    file: Option<PathBuf>,
    /// Milliseconds to wait for a reply before sending the request again.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// How many times to send a request to each node before giving up [default: 20; 4 for
    /// status].
    #[arg(long)]
    attempts: Option<u32>,
    /// Sign every request with this key (from `fba_client keygen`); its state is FILE.state.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Print one JSON object per reply (errors too) on standard output.
    #[arg(long)]
    json: bool,
    /// Keep no state file: a re-run after an unknown outcome sends a new request, which
    /// may apply it twice.
    #[arg(long, conflicts_with_all = ["client_id", "session"])]
    no_state: bool,
    /// Use this client id instead of the state file's (scripts keeping their own state).
    #[arg(long, value_name = "N", conflicts_with = "key")]
    client_id: Option<u64>,
    /// Send the commands as one `many` request: applied in order in one slot, each with its
    /// own result (on the command line, separate them with commas).
    #[arg(long)]
    many: bool,
    /// Use this session instead of registering one (with --seq, and --client-id or --key).
    #[arg(long, value_name = "N", requires = "seq")]
    session: Option<u64>,
    /// Sequence number of the first request in --session; later ones follow.
    #[arg(long, value_name = "N", requires = "session")]
    seq: Option<u64>,
}

/// `fba_client keygen`: a new client key.
#[derive(Parser, Debug)]
#[command(
    name = "fba_client keygen",
    about = "Create a client key (Ed25519, mode 0600; refuses to overwrite) and print its path and client id"
)]
struct KeygenArgs {
    /// Where to write the key [default: $FBA_CLIENT_HOME/client.key, FBA_CLIENT_HOME
    /// defaulting to ~/.fba].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "keygen") {
        let rest = argv.iter().skip(2).cloned();
        return ExitCode::from(keygen(KeygenArgs::parse_from(
            std::iter::once("fba_client keygen".into()).chain(rest),
        )));
    }
    let mut args = Args::parse_from(argv);
    if args.command.first().is_some_and(|word| word == "status") {
        return ExitCode::from(status(&args));
    }
    let out = Output { json: args.json };
    if is_reconfigure_changes(&args.command) {
        match plan_reconfigure(&args, &out) {
            Ok(command) => args.command = command,
            Err(code) => return ExitCode::from(code),
        }
    }
    ExitCode::from(match Run::start(&args, &out) {
        Ok(mut run) => {
            let code = run.run(&out);
            run.close();
            code
        }
        Err(code) => code,
    })
}

/// Writes a new key and prints where and whose it is.
fn keygen(args: KeygenArgs) -> u8 {
    let out = Output { json: args.json };
    let Some(path) = args.out.or_else(|| keyfile::client_home().map(|h| h.join(keyfile::DEFAULT_KEY_NAME)))
    else {
        return out.usage("no --out and no client home (set FBA_CLIENT_HOME or HOME)");
    };
    match keyfile::generate_key_file(&path) {
        Ok(key) if out.json => {
            let object = json!({"status": "ok", "path": path.display().to_string(), "client": key.client_id(), "public_key": key.public_key().to_string()});
            out!("{object}");
            EXIT_OK
        }
        Ok(key) => {
            out!("wrote {} (client id {})", path.display(), key.client_id());
            EXIT_OK
        }
        Err(e) => out.usage(&e.to_string()),
    }
}

/// `status [--all] [--json]`: asks one node, or every node, and prints what they say.
fn status(args: &Args) -> u8 {
    let mut out = Output { json: args.json };
    let mut all = false;
    for word in &args.command[1..] {
        match word.as_str() {
            "--all" | "-a" => all = true,
            "--json" => out.json = true,
            other => {
                return out.usage(&format!("status: unexpected {other:?} (status takes --all and --json)"))
            }
        }
    }
    let servers = match servers(args) {
        Ok(servers) => servers,
        Err(e) => return out.usage(&e.to_string()),
    };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let attempts = args.attempts.unwrap_or(STATUS_ATTEMPTS).max(1);
    let probes = if all {
        status::survey(servers[0], &servers[1..], timeout, attempts)
    } else {
        let result = status::query(servers[0], timeout, attempts).map_err(|e| e.to_string());
        vec![status::Probe { address: servers[0], id: None, result }]
    };
    for probe in probes.iter().filter(|p| !p.answered()) {
        if let Err(e) = &probe.result {
            eprintln!("fba_client: status of {}: {e}", probe.address);
        }
    }
    print_status(&out, all, &probes);
    if probes.iter().all(status::Probe::answered) {
        EXIT_OK
    } else {
        EXIT_UNKNOWN
    }
}

/// `reconfigure --add/--remove/--threshold ...` (rather than the full configuration).
fn is_reconfigure_changes(command: &[String]) -> bool {
    command.first().is_some_and(|w| w == "reconfigure") && command.get(1).is_some_and(|w| w.starts_with("--"))
}

/// The full `reconfigure THRESHOLD ID@IP:PORT...` command for the changes on the command
/// line, planned from the node's status ([`fba::client::reconfigure`]); `Err` holds the
/// exit status of a problem, already reported.
fn plan_reconfigure(args: &Args, out: &Output) -> Result<Vec<String>, u8> {
    let changes = reconfigure::parse_changes(&args.command[1..]).map_err(|e| out.usage(&e.to_string()))?;
    let servers = servers(args).map_err(|e| out.usage(&e.to_string()))?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let attempts = args.attempts.unwrap_or(STATUS_ATTEMPTS).max(1);
    let status = status::query(servers[0], timeout, attempts).map_err(|e| {
        eprintln!("fba_client: reconfigure: cannot read the configuration of {}: {e}", servers[0]);
        EXIT_UNKNOWN
    })?;
    let planned = reconfigure::plan(&status, &changes).map_err(|e| out.usage(&e.to_string()))?;
    eprintln!(
        "fba_client: new configuration: threshold {} of {} members",
        planned.threshold,
        planned.members.len()
    );
    Ok(format!("reconfigure {planned}").split_whitespace().map(String::from).collect())
}

/// Prints the probes: a table (`--all`) or one node's lines; `--json`: an array or one object.
fn print_status(out: &Output, all: bool, probes: &[status::Probe]) {
    let text = match (out.json, all) {
        (true, true) => format!("{}\n", Value::Array(probes.iter().map(status::to_json).collect())),
        (true, false) => probes.iter().map(|p| format!("{}\n", status::to_json(p))).collect(),
        (false, true) => status::table(probes),
        (false, false) => {
            probes.iter().filter_map(|p| p.result.as_ref().ok()).map(status::describe).collect()
        }
    };
    // A reader that went away (`| head`) is not an error worth a panic.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// Where output goes: human lines, or one JSON object per reply (`--json`). Errors and
/// progress go to standard error either way.
struct Output {
    json: bool,
}

impl Output {
    /// Reports a usage or local error; returns [`EXIT_USAGE`].
    fn usage(&self, message: &str) -> u8 {
        eprintln!("fba_client: {message}");
        if self.json {
            out!("{}", json!({"status": "error", "message": message}));
        }
        EXIT_USAGE
    }

    /// Prints a reply. `previous`: it answers the request of an earlier run (in human
    /// form on standard error, so that standard output holds this run's commands only).
    fn reply(&self, node: NodeId, command: &str, reply: &Reply, previous: bool) {
        match (self.json, previous) {
            (false, false) => return out!("[{node}] {command} -> {reply}"),
            (false, true) => {
                return eprintln!("fba_client: [{node}] (previous command) {command} -> {reply}")
            }
            (true, _) => {}
        }
        let mut object = match serde_json::to_value(&reply.outcome) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        object.insert("node".into(), node.0.into());
        object.insert("command".into(), command.into());
        object.insert("client".into(), reply.client.into());
        object.insert("session".into(), reply.session.into());
        object.insert("seq".into(), reply.seq.into());
        if previous {
            object.insert("previous".into(), true.into());
        }
        out!("{}", Value::Object(object));
    }

    /// Reports a request that failed (`status`: unknown, unavailable or error).
    fn failure(
        &self,
        status: &str,
        command: &str,
        message: &str,
        request: &Request,
        extra: Map<String, Value>,
    ) {
        eprintln!("fba_client: {command}: {message}");
        if self.json {
            let mut object = extra;
            object.insert("status".into(), status.into());
            object.insert("command".into(), command.into());
            object.insert("message".into(), message.into());
            object.insert("client".into(), request.client.into());
            object.insert("session".into(), request.session.into());
            object.insert("seq".into(), request.seq.into());
            out!("{}", Value::Object(object));
        }
    }
}

/// How a re-run can resend a request whose outcome was unknown.
enum Mode {
    /// The state file resends it.
    State(StateFile),
    /// The command line names the client, session and sequence numbers.
    Explicit,
    /// Nothing does (`--no-state`, or no client home).
    Stateless,
}

/// One run: the client, its identity's keeper, and the commands.
struct Run {
    client: Client,
    mode: Mode,
    commands: Vec<(String, Op)>,
    /// How many commands were answered so far.
    answered: usize,
    /// The worst exit status so far.
    exit: u8,
}

impl Run {
    /// Reads the commands, the key and the state and builds the client; `Err` holds the
    /// exit status of a usage or local error (already reported).
    fn start(args: &Args, out: &Output) -> Result<Run, u8> {
        let commands = commands(args).map_err(|e| out.usage(&e))?;
        let servers = servers(args).map_err(|e| out.usage(&e.to_string()))?;
        let key = args
            .key
            .as_deref()
            .map(keyfile::read_key_file)
            .transpose()
            .map_err(|e| out.usage(&e.to_string()))?;
        let key_client = key.as_ref().map(ClientKey::client_id);
        let mut client = Client::with_servers(servers, key).map_err(|e| out.usage(&e.to_string()))?;
        client.timeout = Duration::from_millis(args.timeout_ms.max(1));
        client.attempts = args.attempts.unwrap_or(DEFAULT_ATTEMPTS).max(1);
        client.on_progress(progress_printer());
        let mode = identity(args, &mut client, key_client).map_err(|e| out.usage(&e))?;
        Ok(Run { client, mode, commands, answered: 0, exit: EXIT_OK })
    }

    /// Resends a pending request, then sends every command; returns the exit status.
    fn run(&mut self, out: &Output) -> u8 {
        if let Err(code) = self.finish_pending(out) {
            return code;
        }
        while self.answered < self.commands.len() {
            let (command, op) = self.commands[self.answered].clone();
            if let Err(code) =
                self.ensure_session(out, &command).and_then(|()| self.send_new(out, &command, op))
            {
                return code;
            }
            self.answered += 1;
        }
        self.exit
    }

    /// Ends the run: a development-mode state with nothing pending is deleted (it holds
    /// only a random client id), so the client home does not fill up with them.
    fn close(self) {
        let Mode::State(file) = self.mode else { return };
        if self.client.is_signed() || file.state.pending.is_some() {
            return;
        }
        let path = file.path().to_path_buf();
        if let Err(e) = file.remove() {
            eprintln!("fba_client: warning: cannot remove {}: {e}", path.display());
        }
    }

    /// The state file, if this run keeps one.
    fn state(&mut self) -> Option<&mut StateFile> {
        match &mut self.mode {
            Mode::State(file) => Some(file),
            _ => None,
        }
    }

    /// Saves the state after `update`; a failure is a local error (nothing more is sent).
    fn save(&mut self, out: &Output, update: impl FnOnce(&mut ClientState)) -> Result<(), u8> {
        let Some(file) = self.state() else { return Ok(()) };
        update(&mut file.state);
        file.save().map_err(|e| out.usage(&format!("{e}; nothing more was sent")))
    }

    /// Resends the request an earlier run left without a reply, if any. When it is the
    /// first command of this run, that command is done.
    fn finish_pending(&mut self, out: &Output) -> Result<(), u8> {
        let Some(file) = self.state() else { return Ok(()) };
        let Some(pending) = file.state.pending.clone() else { return Ok(()) };
        let (client, session, next_seq) = (file.state.client, file.state.session, file.state.next_seq);
        if let Op::Register { nonce } = pending.op {
            let command = self.commands.first().map_or(pending.command, |(line, _)| line.clone());
            return self.register(out, nonce, &command);
        }
        let request = pending.request(client);
        let sent = match self.commands.first() {
            Some((_, op)) if *op == pending.op => Sent::Resent,
            _ => Sent::Previous,
        };
        if sent == Sent::Resent {
            eprintln!(
                "fba_client: {}: resending the request whose outcome was unknown (client {client}, session {}, seq {})",
                pending.command, request.session, request.seq
            );
        }
        self.client.resume(session, next_seq);
        let result = self.client.send(&request);
        self.settle(out, &pending.command, &request, result, sent)?;
        if sent == Sent::Resent {
            self.answered = 1;
        }
        Ok(())
    }

    /// Registers a session unless the client has one.
    fn ensure_session(&mut self, out: &Output, command: &str) -> Result<(), u8> {
        if self.client.session().is_some() {
            return Ok(());
        }
        let nonce = lib::random_u64(b"fba-register-nonce", self.client.id());
        let pending =
            Pending { session: 0, seq: 0, op: Op::Register { nonce }, command: command.to_string() };
        self.save(out, |s| s.pending = Some(pending))?;
        self.register(out, nonce, command)
    }

    /// Sends the register of `nonce` (for `command`) and records the session.
    fn register(&mut self, out: &Output, nonce: u64, command: &str) -> Result<(), u8> {
        let request = Request::new(self.client.id(), 0, Op::Register { nonce });
        match self.client.register_with(nonce) {
            Ok(session) => self.save(out, |s| (s.session, s.next_seq, s.pending) = (session, 1, None)),
            Err(e) => Err(self.failed(out, command, &request, e, Sent::New)),
        }
    }

    /// Sends `op` as the next request of the session, recorded as pending first.
    fn send_new(&mut self, out: &Output, command: &str, op: Op) -> Result<(), u8> {
        let request = self.client.next_request(op.clone());
        let pending =
            Pending { session: request.session, seq: request.seq, op, command: command.to_string() };
        self.save(out, |s| (s.next_seq, s.pending) = (request.seq + 1, Some(pending)))?;
        let result = self.client.send(&request);
        self.settle(out, command, &request, result, Sent::New)
    }

    /// Records and prints the result of sending `request`.
    fn settle(
        &mut self,
        out: &Output,
        command: &str,
        request: &Request,
        result: Result<(NodeId, Reply), ClientError>,
        sent: Sent,
    ) -> Result<(), u8> {
        let (node, reply) = match result {
            Ok(answer) => answer,
            Err(e @ ClientError::Server { .. }) if sent == Sent::Previous => {
                eprintln!("fba_client: (previous command) {command}: {e}");
                return self.save(out, |s| s.pending = None);
            }
            Err(e) => return Err(self.failed(out, command, request, e, sent)),
        };
        let expired = matches!(reply.outcome, Outcome::SessionExpired { .. });
        self.save(out, |s| {
            s.pending = None;
            if expired {
                s.session = 0;
            }
        })?;
        out.reply(node, command, &reply, sent == Sent::Previous);
        if expired {
            eprintln!("fba_client: {}", expired_advice(command, sent));
        }
        if !reply.outcome.is_ok() && sent != Sent::Previous {
            self.exit = self.exit.max(EXIT_REFUSED);
        }
        Ok(())
    }

    /// Reports a request that got no reply; returns the exit status.
    fn failed(
        &mut self,
        out: &Output,
        command: &str,
        request: &Request,
        error: ClientError,
        sent: Sent,
    ) -> u8 {
        let label = match sent {
            Sent::Previous => format!("(previous command) {command}"),
            Sent::New | Sent::Resent => command.to_string(),
        };
        let mut extra = Map::new();
        if sent == Sent::Previous {
            extra.insert("previous".into(), true.into());
        }
        match error {
            ClientError::NoAnswer { .. } | ClientError::Io(_) => {
                let message = format!("{error}; {}", self.unknown_advice(command, request, sent));
                out.failure("unknown", &label, &message, request, extra);
                EXIT_UNKNOWN
            }
            ClientError::Unavailable { node, peers_heard, needed, .. } => {
                extra.insert("node".into(), node.0.into());
                extra.insert("peers_heard".into(), peers_heard.into());
                extra.insert("needed".into(), needed.into());
                let message = format!("{error}; try again when more nodes are up");
                out.failure("unavailable", &label, &message, request, extra);
                EXIT_UNAVAILABLE
            }
            ClientError::Server { node, .. } => {
                // The node refused the request without pooling it.
                let _ = self.save(out, |s| s.pending = None);
                extra.insert("node".into(), node.0.into());
                out.failure("error", &label, &error.to_string(), request, extra);
                EXIT_REFUSED
            }
            ClientError::Resolve { .. } => out.usage(&error.to_string()),
        }
    }

    /// How to retry safely after no answer to `request`.
    fn unknown_advice(&self, command: &str, request: &Request, sent: Sent) -> String {
        let (client, session, seq) = request.id();
        let register = matches!(request.op, Op::Register { .. });
        let what = if register {
            format!("the session register may still be applied; `{command}` was not sent")
        } else {
            "the request may still be applied".to_string()
        };
        let rest = self.commands.len().saturating_sub(self.answered);
        let files = if self.commands.len() > 1 && !register && sent != Sent::Previous {
            format!(
                " ({} of {} commands were answered: re-run only the {rest} unanswered ones, from `{command}`)",
                self.answered,
                self.commands.len()
            )
        } else {
            String::new()
        };
        let same = format!("the same request (client {client}, session {session}, seq {seq})");
        let how = match (&self.mode, register, sent) {
            (Mode::State(_), true, _) => {
                "Re-run the same command: it resends the same register, then the command".to_string()
            }
            (Mode::State(_), false, Sent::Previous) => {
                format!("Any run first resends {same}, which is applied at most once")
            }
            (Mode::State(_), false, _) => {
                format!("Re-run the same command: it resends {same}, which is applied at most once{files}")
            }
            (_, true, _) => "Re-running is safe: only a register was sent".to_string(),
            (_, false, _) => format!(
                "Re-run with --client-id {client} --session {session} --seq {seq} to resend {same}, \
                 which is applied at most once; a plain re-run sends a new request{files}"
            ),
        };
        format!("{what}. {how}")
    }
}

/// What a `session_expired` reply means for the command.
fn expired_advice(command: &str, sent: Sent) -> String {
    match sent {
        Sent::New => format!(
            "{command}: not applied (the cluster no longer holds this client's session) and not resent: \
             run it again to send it in a new session"
        ),
        Sent::Resent | Sent::Previous => {
            let label = if sent == Sent::Previous { "(previous command) " } else { "" };
            format!(
                "{label}{command}: the cluster no longer holds the session of this request whose outcome was \
                 unknown, so whether it was applied before cannot be told: check with `get` before sending it again"
            )
        }
    }
}

/// Which request a reply answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// A command of this run, sent for the first time.
    New,
    /// A request of an earlier run whose outcome was unknown, resent for the same command.
    Resent,
    /// A request of an earlier run whose outcome was unknown, for another command.
    Previous,
}

/// Prints `waiting for HOST:PORT (attempt 3/20)...` at most once a second, from one second on.
fn progress_printer() -> impl FnMut(Progress) + Send + 'static {
    let mut last: Option<Instant> = None;
    move |p: Progress| {
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if p.elapsed >= Duration::from_secs(1) && due {
            let busy = if p.busy { ", node busy" } else { "" };
            eprintln!("fba_client: waiting for {} (attempt {}/{}{busy})...", p.server, p.attempt, p.attempts);
            last = Some(Instant::now());
        }
    }
}

/// The commands to send, each with its operation.
fn commands(args: &Args) -> Result<Vec<(String, Op)>, String> {
    let lines = command_lines(args)?;
    if args.many {
        return many(&lines).map(|one| vec![one]);
    }
    lines
        .into_iter()
        .map(|line| match parse_text(&line) {
            Ok(op) => Ok((line, op)),
            Err(e) => Err(format!("bad command {line:?}: {e}")),
        })
        .collect()
}

/// `--many`: the commands (comma-separated within a line) as one [`Op::Many`].
fn many(lines: &[String]) -> Result<(String, Op), String> {
    let items: Vec<&str> =
        lines.iter().flat_map(|l| l.split(',')).map(str::trim).filter(|c| !c.is_empty()).collect();
    let ops = items
        .iter()
        .map(|item| parse_text(item).map_err(|e| format!("bad command {item:?}: {e}")))
        .collect::<Result<Vec<Op>, String>>()?;
    let ops = Ops::try_from(ops).map_err(|e| e.to_string())?;
    let all = items.join(", ");
    let label = if all.chars().count() <= 80 { all } else { format!("{} operations", items.len()) };
    Ok((label, Op::Many { ops }))
}

/// The command lines: from `--file`, the command line, or the assignment's six.
fn command_lines(args: &Args) -> Result<Vec<String>, String> {
    if let Some(path) = &args.file {
        let mut text = String::new();
        let read = if path.as_os_str() == "-" {
            std::io::stdin().lock().read_to_string(&mut text)
        } else {
            std::fs::File::open(path).and_then(|f| std::io::BufReader::new(f).read_to_string(&mut text))
        };
        read.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        return if lines.is_empty() {
            Err(format!("{} holds no command", path.display()))
        } else {
            Ok(lines)
        };
    }
    if args.command.is_empty() {
        return Ok(ASSIGNMENT_REQUESTS.iter().map(|s| s.to_string()).collect());
    }
    Ok(vec![args.command.join(" ")])
}

/// `--host` and `--port`, then every `--peer`, resolved.
fn servers(args: &Args) -> Result<Vec<SocketAddr>, ClientError> {
    let mut servers = vec![lib::resolve(&args.host, args.port)?];
    for peer in &args.peers {
        let addr = lib::resolve_host_port(peer)?;
        if !servers.contains(&addr) {
            servers.push(addr);
        }
    }
    Ok(servers)
}

/// Sets the client's identity from the command line or the state file.
fn identity(args: &Args, client: &mut Client, key_client: Option<u64>) -> Result<Mode, String> {
    if args.client_id.is_some() || args.session.is_some() {
        return explicit_identity(args, client);
    }
    if args.no_state {
        return Ok(Mode::Stateless);
    }
    let Some(path) = state_path(args, client.servers()[0]) else {
        eprintln!(
            "fba_client: no client home (set FBA_CLIENT_HOME or HOME): running without a state file, \
             so a re-run after an unknown outcome may apply a request twice"
        );
        return Ok(Mode::Stateless);
    };
    let file = open_state(&path, client, key_client)?;
    client.set_id(file.state.client);
    // A session is reused only to resend a pending request: a cluster started afresh since
    // the last run does not know it, and would refuse every new request as expired.
    client.resume(0, 1);
    Ok(Mode::State(file))
}

/// `--client-id`, `--session` and `--seq`.
fn explicit_identity(args: &Args, client: &mut Client) -> Result<Mode, String> {
    if let Some(id) = args.client_id {
        if id & TEXT_CLIENT_BIT != 0 {
            return Err(format!("--client-id {id}: client ids are below 2^63"));
        }
        client.set_id(id);
    } else if !client.is_signed() {
        return Err("--session needs --client-id (or --key)".to_string());
    }
    if let (Some(session), Some(seq)) = (args.session, args.seq) {
        if session == 0 || seq == 0 {
            return Err("--session and --seq start at 1".to_string());
        }
        client.resume(session, seq);
    }
    Ok(Mode::Explicit)
}

/// `KEY.state` beside the key, or `dev-<ip>-<port>.state` in the client home.
fn state_path(args: &Args, server: SocketAddr) -> Option<PathBuf> {
    if let Some(key) = &args.key {
        let mut path = key.as_os_str().to_owned();
        path.push(".state");
        return Some(PathBuf::from(path));
    }
    let ip: String = server.ip().to_string().chars().map(|c| if c == ':' { '_' } else { c }).collect();
    keyfile::client_home().map(|home| home.join(format!("dev-{ip}-{}.state", server.port())))
}

/// Opens (and locks) the state file, creating the client home if needed.
fn open_state(path: &Path, client: &Client, key_client: Option<u64>) -> Result<StateFile, String> {
    if key_client.is_none() {
        keyfile::create_private_dir(&keyfile::parent_dir(path)).map_err(|e| e.to_string())?;
    }
    let fresh = ClientState { client: client.id(), session: 0, next_seq: 1, pending: None };
    let on_wait = || eprintln!("fba_client: waiting for the other fba_client using {}...", path.display());
    StateFile::open(path, fresh, key_client, on_wait).map_err(|e| e.to_string())
}
