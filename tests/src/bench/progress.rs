//! The harness's progress display on stderr, so stdout carries only the table. On a terminal a
//! status line is redrawn in place; elsewhere (CI logs, a pipe) it is printed at most every few
//! seconds, so a log stays readable.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a status line is repeated when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Progress {
    started: Instant,
    terminal: bool,
    quiet: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A status line is drawn and must be cleared before the next line.
    status_shown: bool,
    last_logged: Option<Instant>,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            quiet: false,
            state: Mutex::new(State::default()),
        }
    }

    /// A display that prints nothing (the smoke test's).
    pub fn quiet() -> Self {
        Progress {
            quiet: true,
            ..Progress::new()
        }
    }

    fn stamp(&self) -> String {
        format!("[{:>6.1}s]", self.started.elapsed().as_secs_f64())
    }

    /// A line that stays: a phase started or finished.
    pub fn say(&self, line: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        let mut state = self.state.lock().expect("progress lock is never poisoned");
        let mut err = std::io::stderr().lock();
        if state.status_shown {
            let _ = write!(err, "\r\x1b[K");
            state.status_shown = false;
        }
        let _ = writeln!(err, "{} {}", self.stamp(), line.as_ref());
    }

    /// A line that is replaced by the next: how far a wait has come.
    pub fn status(&self, line: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        let mut state = self.state.lock().expect("progress lock is never poisoned");
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[K{} {}", self.stamp(), line.as_ref());
            let _ = err.flush();
            state.status_shown = true;
        } else if state.last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            let _ = writeln!(err, "{} {}", self.stamp(), line.as_ref());
            state.last_logged = Some(Instant::now());
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}
