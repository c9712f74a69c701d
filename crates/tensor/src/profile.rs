//! An opt-in, per-op wall-clock profile of the public ops (`ops::*`), for
//! `diffuse bench step --profile`: where a step's time goes, forward and
//! backward. Off by default; when off, an op pays one relaxed atomic load.
//!
//! Only the outermost op of a thread is timed, so an op built from other ops
//! is counted once, under its own name. On a GPU device the time is the host
//! time of the launches (kernels run asynchronously), which is why the bench
//! refuses `--profile` there: `bench kernels` times GPU kernels.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<OpTime>> = Mutex::new(Vec::new());

thread_local! {
    /// How many timed ops enclose the current point on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Accumulated time of one op.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub calls: u64,
    pub seconds: f64,
}

/// Turns recording on or off (process-wide).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Returns what was recorded since the last call, slowest op first, and
/// starts again from zero.
pub fn take() -> Vec<OpTime> {
    let mut table = match TABLE.lock() {
        Ok(t) => t,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut out = std::mem::take(&mut *table);
    out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.op.cmp(b.op)));
    out
}

/// Times the op `name` until dropped (when profiling is on and no other op
/// encloses it on this thread).
#[must_use = "the op is timed until this guard is dropped"]
pub struct OpTimer {
    name: &'static str,
    start: Option<Instant>,
    counted: bool,
}

/// Starts timing `name`; bind the result to a `_guard` for the op's scope.
#[inline]
pub fn op(name: &'static str) -> OpTimer {
    if !ENABLED.load(Ordering::Relaxed) {
        return OpTimer { name, start: None, counted: false };
    }
    let outermost = DEPTH.with(|d| {
        let depth = d.get();
        d.set(depth + 1);
        depth == 0
    });
    OpTimer { name, start: outermost.then(Instant::now), counted: true }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        let Some(start) = self.start else { return };
        let seconds = start.elapsed().as_secs_f64();
        let mut table = match TABLE.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        match table.iter_mut().find(|e| e.op == self.name) {
            Some(e) => {
                e.calls += 1;
                e.seconds += seconds;
            }
            None => table.push(OpTime { op: self.name, calls: 1, seconds }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test only: the switch and the table are process-wide.
    #[test]
    fn records_outermost_ops_only_and_nothing_when_off() {
        let _ = take();
        {
            let _a = op("off");
        }
        assert!(take().is_empty(), "nothing is recorded while profiling is off");
        set_enabled(true);
        for _ in 0..3 {
            let _outer = op("outer");
            let _inner = op("inner");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        set_enabled(false);
        let table = take();
        assert_eq!(table.len(), 1, "{table:?}");
        assert_eq!(table[0].op, "outer");
        assert_eq!(table[0].calls, 3);
        assert!(table[0].seconds >= 0.003, "{table:?}");
        assert!(take().is_empty(), "take starts again from zero");
    }
}
