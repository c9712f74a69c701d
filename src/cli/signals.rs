//! SIGINT, SIGTERM and SIGHUP during `diffuse train`. The first one asks the
//! loop to stop once the current step is done: it writes a checkpoint, says
//! how to resume, and the process exits with 128 + the signal (130 for
//! SIGINT). A second one exits at once with that status; every file is
//! written to a temporary name and renamed, so even then no file is torn,
//! and the temporary file left behind is removed when the run is resumed.
//!
//! Tests (and `tests/cli_reliability.rs`) make the timing deterministic
//! with `DIFFUSE_TEST_SIGNAL=<INT|TERM|HUP>@<step>[x<count>]`: after that
//! step the process sends itself the signal `count` times (default once),
//! through the same handlers a real signal meets.

use super::progress::Progress;
use anyhow::{anyhow, Result};
use diffuse_trainer::train::{Observer, StepMetrics};
use signal_hook::consts::signal::{SIGINT, SIGTERM};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[cfg(unix)]
const SIGNALS: [(c_int, &str); 3] = [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (signal_hook::consts::SIGHUP, "SIGHUP")];
#[cfg(not(unix))]
const SIGNALS: [(c_int, &str); 2] = [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")];

/// The environment variable of the test hook (see the module documentation).
pub const TEST_HOOK: &str = "DIFFUSE_TEST_SIGNAL";

/// The installed handlers and what they have seen.
pub struct StopSignals {
    /// Set by the first signal; a signal arriving while it is set exits.
    pending: Arc<AtomicBool>,
    /// The number of the last signal received (0: none).
    which: Arc<AtomicUsize>,
    test_hook: Option<TestHook>,
}

struct TestHook {
    signal: c_int,
    after_step: u64,
    count: u32,
}

impl StopSignals {
    /// Installs the handlers (and reads the test hook).
    pub fn install() -> Result<Self> {
        let pending = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        for (sig, name) in SIGNALS {
            let fail = |e: std::io::Error| anyhow!("cannot install a handler for {name}: {e}");
            // Handlers run in registration order: the exit test must come
            // before the flag is set, so that only a second signal exits.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&pending)).map_err(fail)?;
            signal_hook::flag::register(sig, Arc::clone(&pending)).map_err(fail)?;
            signal_hook::flag::register_usize(sig, Arc::clone(&which), sig as usize).map_err(fail)?;
        }
        let test_hook = match std::env::var(TEST_HOOK) {
            Ok(spec) => Some(parse_hook(&spec)?),
            Err(_) => None,
        };
        Ok(StopSignals { pending, which, test_hook })
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<c_int> {
        if !self.pending.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.which.load(Ordering::SeqCst) as c_int)
    }

    /// Called after every step: fires the test hook, then reports whether a
    /// signal asked to stop.
    fn poll(&self, step: u64) -> bool {
        if let Some(h) = self.test_hook.as_ref().filter(|h| h.after_step == step) {
            for _ in 0..h.count {
                // The same path as a real signal; a second one exits here.
                let _ = signal_hook::low_level::raise(h.signal);
            }
        }
        self.received().is_some()
    }
}

fn parse_hook(spec: &str) -> Result<TestHook> {
    let bad = || anyhow!("{TEST_HOOK}={spec:?}: expected <INT|TERM|HUP>@<step>[x<count>]");
    let (name, rest) = spec.split_once('@').ok_or_else(bad)?;
    let (step, count) = rest.split_once('x').unwrap_or((rest, "1"));
    let signal = SIGNALS.iter().find(|(_, n)| n.strip_prefix("SIG") == Some(name)).ok_or_else(bad)?.0;
    Ok(TestHook { signal, after_step: step.parse().map_err(|_| bad())?, count: count.parse().map_err(|_| bad())? })
}

/// The name of a signal we handle.
pub fn signal_name(sig: c_int) -> &'static str {
    SIGNALS.iter().find(|(s, _)| *s == sig).map_or("a signal", |(_, n)| n)
}

/// The progress display, plus the stop request of [`StopSignals`].
pub struct Interruptible<'a> {
    pub progress: Progress,
    pub signals: &'a StopSignals,
}

impl Observer for Interruptible<'_> {
    fn start(&mut self, first: u64, total: u64) {
        self.progress.start(first, total);
    }
    fn step(&mut self, m: &StepMetrics) {
        self.progress.step(m);
    }
    fn message(&mut self, msg: &str) {
        self.progress.message(msg);
    }
    fn should_stop(&mut self, step: u64) -> bool {
        self.signals.poll(step)
    }
}

/// `train` stopped by a signal: the error that makes `main` exit with
/// 128 + the signal.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: c_int,
    pub message: String,
}

impl Interrupted {
    pub fn exit_code(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(1)
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_hook_parses_and_refuses_nonsense() {
        let h = parse_hook("TERM@7x2").unwrap();
        assert_eq!((h.signal, h.after_step, h.count), (SIGTERM, 7, 2));
        let h = parse_hook("INT@3").unwrap();
        assert_eq!((h.signal, h.after_step, h.count), (SIGINT, 3, 1));
        for bad in ["INT", "KILL@3", "INT@x", "INT@3x", "@3"] {
            assert!(parse_hook(bad).is_err(), "{bad}");
        }
        assert_eq!(signal_name(SIGINT), "SIGINT");
    }
}
