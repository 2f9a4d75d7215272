//! The timer thread: turns the core's `SetTimer`/`CancelTimer` outputs into timer events.
//!
//! The protocol thread sends [`TimerCommand`]s; this thread keeps the armed deadlines and
//! blocks on its command channel until the earliest one, then sends the timer's id back.
//! A firing that raced with a re-arm is harmless: the core ignores a timer that is not due.

use crate::scp::TimerId;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeMap;
use std::io;
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// What the protocol thread asks of the timer thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerCommand {
    /// Fire `TimerId` at the instant (replacing an earlier deadline).
    Set(TimerId, Instant),
    /// Forget the timer.
    Cancel(TimerId),
}

/// Starts the timer thread. It ends when the command channel is closed.
pub fn spawn(commands: Receiver<TimerCommand>, fired: Sender<TimerId>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("timer".into()).spawn(move || run(&commands, &fired))
}

fn run(commands: &Receiver<TimerCommand>, fired: &Sender<TimerId>) {
    let mut armed: BTreeMap<TimerId, Instant> = BTreeMap::new();
    loop {
        let next = armed.iter().min_by_key(|(_, at)| **at).map(|(id, at)| (*id, *at));
        let command = match next {
            Some((_, at)) => commands.recv_deadline(at),
            None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match command {
            Ok(TimerCommand::Set(id, at)) => {
                armed.insert(id, at);
            }
            Ok(TimerCommand::Cancel(id)) => {
                armed.remove(&id);
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let due: Vec<TimerId> =
                    armed.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect();
                for id in due {
                    armed.remove(&id);
                    if fired.send(id).is_err() {
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_honours_cancel() {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (fire_tx, fire_rx) = crossbeam_channel::unbounded();
        let handle = spawn(cmd_rx, fire_tx).expect("spawn");
        let now = Instant::now();
        cmd_tx.send(TimerCommand::Set(TimerId::Ballot(1), now + Duration::from_millis(40))).expect("send");
        cmd_tx
            .send(TimerCommand::Set(TimerId::Nomination(1), now + Duration::from_millis(20)))
            .expect("send");
        cmd_tx.send(TimerCommand::Set(TimerId::Rebroadcast, now + Duration::from_millis(10))).expect("send");
        cmd_tx.send(TimerCommand::Cancel(TimerId::Rebroadcast)).expect("send");
        let wait = Duration::from_secs(5);
        assert_eq!(fire_rx.recv_timeout(wait), Ok(TimerId::Nomination(1)));
        assert_eq!(fire_rx.recv_timeout(wait), Ok(TimerId::Ballot(1)));
        drop(cmd_tx);
        handle.join().expect("timer thread ends when its channel closes");
        assert!(fire_rx.try_recv().is_err(), "the cancelled timer never fired");
    }
}
