//! Cooperative cancellation with two levels.
//!
//! The first request (the first Ctrl-C) stops the engine from starting anything new
//! and tells running phases, which stop at their next safe point
//! ([`PhaseContext::checkpoint`](crate::PhaseContext::checkpoint)) or finish. The
//! second request aborts running phases where they stand.

use tokio_util::sync::CancellationToken;

/// A cancellation handle shared by a run and whoever may cancel it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    soft: CancellationToken,
    hard: CancellationToken,
}

impl Cancellation {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation: the first call stops new work, the second aborts.
    pub fn request(&self) {
        if self.soft.is_cancelled() {
            self.hard.cancel();
        } else {
            self.soft.cancel();
        }
    }

    /// Aborts at once (both levels).
    pub fn abort(&self) {
        self.soft.cancel();
        self.hard.cancel();
    }

    /// Whether cancellation was requested.
    pub fn is_requested(&self) -> bool {
        self.soft.is_cancelled()
    }

    /// Whether an abort was requested.
    pub fn is_aborted(&self) -> bool {
        self.hard.is_cancelled()
    }

    /// Completes when cancellation is requested.
    pub async fn requested(&self) {
        self.soft.cancelled().await;
    }

    /// Completes when an abort is requested.
    pub async fn aborted(&self) {
        self.hard.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_is_soft_second_aborts() {
        let c = Cancellation::new();
        assert!(!c.is_requested());
        c.request();
        assert!(c.is_requested() && !c.is_aborted());
        c.clone().request();
        assert!(c.is_aborted());
    }
}
