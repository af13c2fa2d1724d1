//! The bounded hand-over from a capture thread to inference.
//!
//! Kept tiny on purpose (a `Mutex<VecDeque>` and two condvars): a live camera must never wait on
//! inference, so a full queue drops its *oldest* frame (the newest is the most useful), while a
//! replay waits for room so every recorded frame is seen.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Frame;

/// Bounded, closable frame queue shared by one producer and one consumer thread.
pub struct FrameQueue {
    state: Mutex<State>,
    /// Signalled when a frame arrives or the queue closes.
    not_empty: Condvar,
    /// Signalled when a frame leaves or the queue closes.
    not_full: Condvar,
    capacity: usize,
}

struct State {
    frames: VecDeque<Frame>,
    closed: bool,
}

/// Why `push_blocking` gave the frame back.
pub enum PushError {
    /// Still no room when the timeout passed; retry with the returned frame.
    Full(Frame),
    /// The queue was closed; nobody will take frames any more.
    Closed(Frame),
}

/// What `pop` found.
pub enum Pop {
    Frame(Frame),
    /// Nothing arrived within the timeout; the queue is still open.
    Timeout,
    /// Closed and drained: no frame will ever come.
    Closed,
}

impl FrameQueue {
    /// A queue holding at most `capacity` frames (at least 1).
    pub fn new(capacity: usize) -> FrameQueue {
        let capacity = capacity.max(1);
        FrameQueue {
            state: Mutex::new(State {
                frames: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity,
        }
    }

    // A panic while holding the lock cannot leave `State` inconsistent, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live sources: enqueue without waiting. Returns the frame that was dropped to make room (the
    /// oldest queued one), or `frame` itself if the queue is closed; the caller counts it.
    pub fn push(&self, frame: Frame) -> Option<Frame> {
        let mut st = self.lock();
        if st.closed {
            return Some(frame);
        }
        let dropped = if st.frames.len() >= self.capacity {
            st.frames.pop_front()
        } else {
            None
        };
        st.frames.push_back(frame);
        drop(st);
        self.not_empty.notify_one();
        dropped
    }

    /// Replay sources: wait up to `timeout` for room (back-pressure). The frame comes back on
    /// timeout so the caller can check for cancellation and retry.
    pub fn push_blocking(&self, frame: Frame, timeout: Duration) -> Result<(), PushError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(PushError::Closed(frame));
            }
            if st.frames.len() < self.capacity {
                st.frames.push_back(frame);
                drop(st);
                self.not_empty.notify_one();
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PushError::Full(frame));
            }
            st = self
                .not_full
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` for a frame. After `close`, queued frames are still delivered first.
    pub fn pop(&self, timeout: Duration) -> Pop {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(frame) = st.frames.pop_front() {
                drop(st);
                self.not_full.notify_one();
                return Pop::Frame(frame);
            }
            if st.closed {
                return Pop::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Pop::Timeout;
            }
            st = self
                .not_empty
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// No more frames will be pushed; wakes every waiter. The consumer still drains what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::SystemTime;

    fn frame(seq: u64) -> Frame {
        Frame {
            camera: "t".into(),
            seq,
            at: std::time::Instant::now(),
            captured_at: SystemTime::UNIX_EPOCH,
            clock_synced: false,
            image: image::RgbImage::new(2, 2),
        }
    }

    fn pop_seq(q: &FrameQueue) -> Option<u64> {
        match q.pop(Duration::from_millis(10)) {
            Pop::Frame(f) => Some(f.seq),
            Pop::Timeout | Pop::Closed => None,
        }
    }

    #[test]
    fn push_drops_oldest_when_full() {
        let q = FrameQueue::new(2);
        assert!(q.push(frame(0)).is_none());
        assert!(q.push(frame(1)).is_none());
        let dropped = q.push(frame(2)).map(|f| f.seq);
        assert_eq!(dropped, Some(0));
        assert_eq!(q.len(), 2);
        assert_eq!(pop_seq(&q), Some(1));
        assert_eq!(pop_seq(&q), Some(2));
        assert!(matches!(q.pop(Duration::from_millis(5)), Pop::Timeout));
    }

    #[test]
    fn push_blocking_times_out_then_succeeds_when_consumer_pops() {
        let q = Arc::new(FrameQueue::new(1));
        assert!(q.push_blocking(frame(0), Duration::from_millis(5)).is_ok());
        let back = match q.push_blocking(frame(1), Duration::from_millis(20)) {
            Err(PushError::Full(f)) => f,
            _ => panic!("expected Full"),
        };
        let started = Instant::now();
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                pop_seq(&q)
            })
        };
        assert!(q.push_blocking(back, Duration::from_secs(5)).is_ok());
        // Room appears only once the consumer has slept and popped.
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(consumer.join().ok().flatten(), Some(0));
        assert_eq!(pop_seq(&q), Some(1));
    }

    #[test]
    fn close_drains_then_reports_closed_and_wakes_waiters() {
        let q = Arc::new(FrameQueue::new(1));
        assert!(q.push(frame(7)).is_none());
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                matches!(
                    q.push_blocking(frame(8), Duration::from_secs(10)),
                    Err(PushError::Closed(_))
                )
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        q.close();
        assert!(
            producer.join().unwrap_or(false),
            "blocked producer saw Closed"
        );
        assert_eq!(pop_seq(&q), Some(7));
        assert!(matches!(q.pop(Duration::from_secs(10)), Pop::Closed));
        assert_eq!(q.push(frame(9)).map(|f| f.seq), Some(9));
    }

    #[test]
    fn pop_wakes_on_push_from_another_thread() {
        let q = Arc::new(FrameQueue::new(2));
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                q.push(frame(3)).is_none()
            })
        };
        assert!(matches!(q.pop(Duration::from_secs(10)), Pop::Frame(f) if f.seq == 3));
        assert!(producer.join().unwrap_or(false));
    }
}
