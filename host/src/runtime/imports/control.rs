//! `control`: the attempt's cancellation flag. It turns true when the job is cancelled, its
//! lease is lost, or the worker's shutdown grace period is over, and not when shutdown starts.

use super::HostState;
use crate::runtime::bindings::jobhost::plugin::control::Host;

impl Host for HostState {
    fn is_cancelled(&mut self) -> bool {
        let cancelled = self.cancel.is_cancelled() || self.services.stopping.is_cancelled();
        self.saw_cancel |= cancelled;
        cancelled
    }
}
