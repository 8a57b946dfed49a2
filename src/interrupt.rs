//! A stop the user asked for (the first Ctrl-C, SIGTERM or SIGHUP): a flag that long
//! loops look at between steps, so a run ends at a step boundary (a training saves a
//! checkpoint there, a sampler stops) and the report is written for what finished.
//! A leaf: stages and samplers read it, the command line sets it.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked for the stop, 0 while none did.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Asks every running stage to stop at its next step.
pub fn request(signal: i32) {
    SIGNAL.store(signal.max(1), Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The signal that asked for the stop, if one did.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// What a stage stopped by the request fails with, as its message starts.
pub const STOPPED: &str = "stopped by the interrupt";
