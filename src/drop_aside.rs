//! Dropping Kafka clients without waiting for the broker.
//!
//! Dropping a consumer that belongs to a group closes it, and closing waits
//! for the group coordinator: if the cluster is gone, for ever. The engine
//! drops its clients when Kafka fails under it, so they are dropped on a
//! thread of their own, which ends when the close does (or with the
//! process).

use std::ops::{Deref, DerefMut};

/// Holds a value and drops it on a thread of its own.
pub struct DropAside<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropAside<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(Some(value))
    }

    /// Drops the value now, waiting at most `timeout` for it (for a clean
    /// shutdown, whose last log line should come last); a drop that takes
    /// longer goes on on its own thread.
    pub fn drop_within(mut self, timeout: std::time::Duration) {
        let Some(value) = self.0.take() else { return };
        let (done, dropped) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("cxpulse-close".to_owned())
            .spawn(move || {
                drop(value);
                let _ = done.send(());
            });
        if spawned.is_ok() && dropped.recv_timeout(timeout).is_err() {
            tracing::warn!("a Kafka client is still closing; not waiting for it");
        }
    }
}

impl<T: Send + 'static> Deref for DropAside<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Only `drop` takes the value out.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl<T: Send + 'static> DerefMut for DropAside<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl<T: Send + 'static> Drop for DropAside<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            let spawned = std::thread::Builder::new()
                .name("cxpulse-close".to_owned())
                .spawn(move || drop(value));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a thread to close a Kafka client; leaking it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Blocks its drop until told to finish.
    struct SlowToClose(mpsc::Receiver<()>, mpsc::Sender<&'static str>);

    impl Drop for SlowToClose {
        fn drop(&mut self) {
            let _ = self.0.recv();
            let _ = self.1.send("closed");
        }
    }

    #[test]
    fn a_drop_within_a_time_waits_that_long_at_most() {
        let (finish, wait) = mpsc::channel();
        let (done, closed) = mpsc::channel();
        DropAside::new(SlowToClose(wait, done)).drop_within(Duration::from_millis(50));
        assert!(closed.try_recv().is_err(), "gave up waiting");
        finish.send(()).expect("send");
        assert_eq!(closed.recv_timeout(Duration::from_secs(5)), Ok("closed"));
        let (finish, wait) = mpsc::channel();
        let (done, closed) = mpsc::channel();
        finish.send(()).expect("send");
        DropAside::new(SlowToClose(wait, done)).drop_within(Duration::from_secs(5));
        assert_eq!(closed.try_recv(), Ok("closed"), "closed before returning");
    }

    #[test]
    fn the_drop_does_not_wait() {
        let (finish, wait) = mpsc::channel();
        let (done, closed) = mpsc::channel();
        let held = DropAside::new(SlowToClose(wait, done));
        drop(held);
        assert!(closed.try_recv().is_err(), "still closing, and we are here");
        finish.send(()).expect("send");
        assert_eq!(closed.recv_timeout(Duration::from_secs(5)), Ok("closed"));
    }
}
