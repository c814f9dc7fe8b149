//! What can be sent to a process.
//!
//! A local send moves the value into the receiver's mailbox: it is never
//! serialized or copied (a `Vec<u8>` or `Arc` payload moves by pointer). The
//! [`Message`] trait only tells the mailbox how many bytes a message holds, so
//! mailboxes can be bounded in bytes as well as in messages.
//!
//! ```
//! use foundation::Message;
//! struct Job { id: u64, payload: Vec<u8> }
//! impl Message for Job {
//!     fn heap_bytes(&self) -> usize { self.payload.len() }
//! }
//! let job = Job { id: 1, payload: vec![0; 100] };
//! assert_eq!(job.total_bytes(), std::mem::size_of::<Job>() + 100);
//! ```

use std::sync::Arc;

/// A value a process can receive.
///
/// Implement it with an empty body for messages that own no heap memory
/// (`impl Message for Ping {}`); override [`Message::heap_bytes`] for those
/// that do, so byte limits see the real size.
pub trait Message: Send + 'static {
    /// Bytes owned on the heap, beyond `size_of::<Self>()`.
    fn heap_bytes(&self) -> usize {
        0
    }

    /// Bytes this message is accounted for in a mailbox.
    fn total_bytes(&self) -> usize
    where
        Self: Sized,
    {
        std::mem::size_of::<Self>() + self.heap_bytes()
    }
}

macro_rules! plain_messages {
    ($($t:ty),* $(,)?) => { $(impl Message for $t {})* };
}

plain_messages!((), bool, char, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);
plain_messages!(&'static str, crate::Pid, crate::ExitReason, std::time::Duration, std::time::Instant);

impl Message for String {
    fn heap_bytes(&self) -> usize {
        self.capacity()
    }
}

impl<T: Message> Message for Vec<T> {
    fn heap_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>() + self.iter().map(Message::heap_bytes).sum::<usize>()
    }
}

impl<T: Message> Message for Box<T> {
    fn heap_bytes(&self) -> usize {
        self.as_ref().total_bytes()
    }
}

impl<T: Message> Message for Option<T> {
    fn heap_bytes(&self) -> usize {
        self.as_ref().map_or(0, Message::heap_bytes)
    }
}

/// Shared data is accounted at its full size in every mailbox it sits in:
/// a limit must hold even if the other references go away.
impl<T: Message + Sync> Message for Arc<T> {
    fn heap_bytes(&self) -> usize {
        self.as_ref().total_bytes()
    }
}

impl Message for Arc<str> {
    fn heap_bytes(&self) -> usize {
        self.len()
    }
}

impl Message for Arc<[u8]> {
    fn heap_bytes(&self) -> usize {
        self.len()
    }
}

impl<T: Send + 'static> Message for tokio::sync::oneshot::Sender<T> {}
impl<T: Send + 'static> Message for crate::Reply<T> {}

/// A `Bytes` payload is shared, not copied: a send moves a pointer, and a
/// clone for a second receiver costs a reference count. It is accounted at
/// its full length in every mailbox that holds it.
impl Message for bytes::Bytes {
    fn heap_bytes(&self) -> usize {
        self.len()
    }
}

impl Message for bytes::BytesMut {
    fn heap_bytes(&self) -> usize {
        self.capacity()
    }
}

macro_rules! tuple_messages {
    ($(($($n:tt $t:ident),+)),* $(,)?) => { $(
        impl<$($t: Message),+> Message for ($($t,)+) {
            fn heap_bytes(&self) -> usize { 0 $(+ self.$n.heap_bytes())+ }
        }
    )* };
}

tuple_messages!((0 A), (0 A, 1 B), (0 A, 1 B, 2 C), (0 A, 1 B, 2 C, 3 D));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_bytes_count_owned_buffers() {
        let v: Vec<u8> = Vec::with_capacity(1000);
        assert_eq!(v.heap_bytes(), 1000);
        let t = (7u64, String::with_capacity(10));
        assert_eq!(t.heap_bytes(), 10);
        assert_eq!(t.total_bytes(), std::mem::size_of::<(u64, String)>() + 10);
        assert_eq!(Some(vec![String::with_capacity(3)]).heap_bytes(), std::mem::size_of::<String>() + 3);
    }
}
