//! Queue ids as 16-byte numbers ([`IdKey`]) for the tables that hold one per queued message
//! (the queue's schedule, the file spool's set of state files): a `String` id costs about
//! 56 bytes with its allocation, a key 16, and keys sort as the ids do.

use super::QueueId;

/// A queue id packed into a number: its hex value, with its length in the top byte.
pub type IdKey = u128;

/// The key of `id`, or `None` when it is not a queue id (hex digits, at most 30).
pub fn id_key(id: &str) -> Option<IdKey> {
    if id.is_empty() || id.len() > 30 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = u128::from_str_radix(id, 16).ok()?;
    Some(value | ((id.len() as u128) << 120))
}

/// The queue id a key was made from (lowercase hex).
pub fn id_string(key: IdKey) -> QueueId {
    let len = (key >> 120) as usize;
    let value = key & ((1u128 << 120) - 1);
    format!("{value:0len$x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gives_its_id_back_and_sorts_as_ids_do() {
        let a = crate::spool::new_queue_id();
        let b = crate::spool::new_queue_id();
        let (ka, kb) = (id_key(&a).unwrap(), id_key(&b).unwrap());
        assert_eq!(id_string(ka), a);
        assert_eq!(a.cmp(&b), ka.cmp(&kb));
        assert_eq!(id_string(id_key("00ab").unwrap()), "00ab");
        assert_ne!(id_key("0ab"), id_key("ab"));
        assert_eq!(id_key("not hex"), None);
        assert_eq!(id_key(&"f".repeat(31)), None);
    }
}
