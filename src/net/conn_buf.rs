//! The receive buffer of one connection.
//!
//! It grows only as bytes actually arrive (doubling when full, up to the largest
//! legal frame), so a client that declares a huge frame and then sends nothing
//! costs nothing; and it shrinks back after a large frame has been served, so one
//! big value does not pin its memory for the life of the connection.

pub const RECV_BUF_INITIAL: usize = 64 * 1024;

pub struct RecvBuf {
    buf: Vec<u8>,
    filled: usize,
    ceiling: usize,
}

impl RecvBuf {
    /// `ceiling`: the largest frame the buffer must be able to hold.
    pub fn new(ceiling: usize) -> RecvBuf {
        let initial = RECV_BUF_INITIAL.min(ceiling.max(1));
        RecvBuf {
            buf: vec![0; initial],
            filled: 0,
            ceiling: ceiling.max(initial),
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the next [`RecvBuf::spare`] will add (0: it has room), so the
    /// caller can get them from its shard's buffer budget first.
    pub fn growth(&self, _needed: usize) -> usize {
        if self.filled < self.buf.len() {
            return 0;
        }
        let target = (self.buf.len() * 2).min(self.ceiling);
        assert!(
            target > self.buf.len(),
            "receive buffer full at its ceiling: frame bound not enforced"
        );
        target - self.buf.len()
    }

    /// Room to read into. `needed` is the total size of the frame being
    /// assembled (bounded by the ceiling); the buffer doubles only when full.
    pub fn spare(&mut self, needed: usize) -> &mut [u8] {
        let grow = self.growth(needed);
        if grow > 0 {
            self.buf.resize(self.buf.len() + grow, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Bytes past the initial buffer: what the shard's budget accounts.
    pub fn extra(&self) -> usize {
        self.buf.len().saturating_sub(RECV_BUF_INITIAL)
    }

    pub fn advance(&mut self, n: usize) {
        assert!(self.filled + n <= self.buf.len());
        self.filled += n;
    }

    /// Drop the first `n` bytes (frames that were answered).
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.filled);
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
        if self.buf.len() > 4 * RECV_BUF_INITIAL && self.filled <= RECV_BUF_INITIAL {
            self.buf.truncate(RECV_BUF_INITIAL);
            self.buf.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_only_when_full_and_shrinks_after() {
        let mut b = RecvBuf::new(1 << 20);
        assert_eq!(b.spare(1 << 20).len(), RECV_BUF_INITIAL);
        b.advance(RECV_BUF_INITIAL);
        assert_eq!(
            b.spare(1 << 20).len(),
            RECV_BUF_INITIAL,
            "doubled, not jumped to the declared size"
        );
        b.advance(RECV_BUF_INITIAL);
        b.spare(1 << 20);
        b.advance(10);
        assert_eq!(b.capacity(), 4 * RECV_BUF_INITIAL);
        b.consume(2 * RECV_BUF_INITIAL);
        assert_eq!(b.data().len(), 10);
        assert_eq!(
            b.capacity(),
            4 * RECV_BUF_INITIAL,
            "not past the shrink threshold"
        );
    }

    #[test]
    fn consume_keeps_the_tail() {
        let mut b = RecvBuf::new(1024);
        b.spare(10)[..5].copy_from_slice(b"abcde");
        b.advance(5);
        b.consume(2);
        assert_eq!(b.data(), b"cde");
    }
}
