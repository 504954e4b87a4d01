//! Reassembly of fragmented data frames: `sum` slots per `message_id`, each
//! fragment stored at its `seq`, the payload joined in seq order (not arrival
//! order) once every slot is filled. Incomplete messages expire, and the
//! bytes held are bounded, so a peer that never finishes cannot grow memory.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// At most this many fragments per message and bytes buffered in total.
const MAX_FRAGMENTS: usize = 1024;
const MAX_BUFFERED: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment {seq} of {sum} is out of range")]
    OutOfRange { seq: usize, sum: usize },
    #[error("fragment says {sum} parts but earlier fragments said {expected}")]
    SumChanged { sum: usize, expected: usize },
}

struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    last_seen: Instant,
}

pub struct Reassembly {
    partial: HashMap<String, Partial>,
    buffered: usize,
    expiry: Duration,
}

impl Reassembly {
    pub fn new(expiry: Duration) -> Self {
        Self { partial: HashMap::new(), buffered: 0, expiry }
    }

    /// Adds one fragment; returns the whole payload when it completes a message.
    pub fn add(
        &mut self,
        message_id: &str,
        sum: usize,
        seq: usize,
        payload: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if sum == 0 || sum > MAX_FRAGMENTS || seq >= sum {
            return Err(FragmentError::OutOfRange { seq, sum });
        }
        if sum == 1 {
            return Ok(Some(payload));
        }
        self.expire();
        let entry = self.partial.entry(message_id.to_owned()).or_insert_with(|| Partial {
            parts: vec![None; sum],
            bytes: 0,
            last_seen: Instant::now(),
        });
        if entry.parts.len() != sum {
            return Err(FragmentError::SumChanged { sum, expected: entry.parts.len() });
        }
        entry.last_seen = Instant::now();
        if entry.parts[seq].is_none() {
            entry.bytes += payload.len();
            self.buffered += payload.len();
            entry.parts[seq] = Some(payload);
        }
        if entry.parts.iter().any(Option::is_none) {
            self.shed();
            return Ok(None);
        }
        let done = self.partial.remove(message_id).expect("the entry was just updated");
        self.buffered -= done.bytes;
        Ok(Some(done.parts.into_iter().flatten().flatten().collect()))
    }

    /// Messages still incomplete.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn expire(&mut self) {
        let expiry = self.expiry;
        let mut freed = 0;
        self.partial.retain(|id, p| {
            let keep = p.last_seen.elapsed() < expiry;
            if !keep {
                tracing::warn!(message_id = %id, "incomplete fragmented frame expired");
                freed += p.bytes;
            }
            keep
        });
        self.buffered -= freed;
    }

    /// Over the byte budget, drop the oldest incomplete messages.
    fn shed(&mut self) {
        while self.buffered > MAX_BUFFERED {
            let Some(oldest) = self.partial.iter().min_by_key(|(_, p)| p.last_seen).map(|(id, _)| id.clone()) else {
                return;
            };
            let dropped = self.partial.remove(&oldest).expect("found above");
            tracing::warn!(message_id = %oldest, "fragment buffer full; dropped an incomplete frame");
            self.buffered -= dropped.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_in_seq_order_whatever_the_arrival_order() {
        let mut r = Reassembly::new(Duration::from_secs(5));
        assert_eq!(r.add("m", 3, 2, b"c".to_vec()), Ok(None));
        assert_eq!(r.add("m", 3, 0, b"a".to_vec()), Ok(None));
        assert_eq!(r.add("m", 3, 0, b"a".to_vec()), Ok(None), "a repeated fragment is harmless");
        assert_eq!(r.add("m", 3, 1, b"b".to_vec()), Ok(Some(b"abc".to_vec())));
        assert_eq!(r.pending(), 0);
        assert_eq!(r.add("single", 1, 0, b"x".to_vec()), Ok(Some(b"x".to_vec())));
    }

    #[test]
    fn refuses_nonsense() {
        let mut r = Reassembly::new(Duration::from_secs(5));
        assert!(r.add("m", 2, 2, vec![]).is_err());
        assert!(r.add("m", 0, 0, vec![]).is_err());
        r.add("m", 2, 0, vec![1]).unwrap();
        assert_eq!(r.add("m", 3, 1, vec![2]), Err(FragmentError::SumChanged { sum: 3, expected: 2 }));
    }

    #[tokio::test(start_paused = true)]
    async fn incomplete_messages_expire() {
        let mut r = Reassembly::new(Duration::from_secs(5));
        r.add("old", 2, 0, vec![1]).unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        r.add("new", 2, 0, vec![1]).unwrap();
        assert_eq!(r.pending(), 1);
        // The expired half is gone: its second half starts a new message.
        assert_eq!(r.add("old", 2, 1, vec![2]), Ok(None));
    }
}
