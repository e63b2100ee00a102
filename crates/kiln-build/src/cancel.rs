//! Stopping a build from outside (Ctrl-C, SIGTERM): a flag the executor
//! checks between steps, and the kill handles of the containers running
//! now, so a long RUN stops at once. Whoever cancels then sees the build
//! return [`crate::BuildError::Interrupted`] after every scratch directory
//! and mount of the build is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kiln_runtime::KillHandle;

#[derive(Default)]
pub struct Cancel {
    cancelled: AtomicBool,
    running: Mutex<Vec<(u64, KillHandle)>>,
    next_id: Mutex<u64>,
}

impl Cancel {
    /// Stops the build: no new step starts, running containers are killed.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        for (_, handle) in lock(&self.running).iter() {
            handle.kill();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Registers a running container until the guard is dropped. A
    /// container registered after `cancel` is killed at once.
    pub(crate) fn track(&self, handle: KillHandle) -> Tracked<'_> {
        let id = {
            let mut next = lock(&self.next_id);
            *next += 1;
            *next
        };
        lock(&self.running).push((id, handle.clone()));
        if self.is_cancelled() {
            handle.kill();
        }
        Tracked { cancel: self, id }
    }
}

pub(crate) struct Tracked<'a> {
    cancel: &'a Cancel,
    id: u64,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        lock(&self.cancel.running).retain(|(id, _)| *id != self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
