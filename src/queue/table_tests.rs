//! Tests of the queue's table (`table.rs`): entry size, kept counts, the schedule.

use super::*;
use crate::spool::new_queue_id;

fn message(app: Option<&str>, rcpts: &[&str], received_at: u64) -> SpooledMessage {
    crate::queue::summary::tests::message(&new_queue_id(), app, rcpts, received_at)
}

/// The summary of the table's kept counts is the one a walk over the messages gives,
/// through insertions, changes, deletions and removals.
#[test]
fn the_kept_counts_match_a_walk_over_the_messages() {
    let now = 1_000_000;
    let mut msgs = [
        message(
            Some("shop"),
            &["x@Big.test", "y@big.test", "z@small.test"],
            now - 10,
        ),
        message(None, &["w@big.test", "v@small.test"], now - 7200),
        message(Some("shop"), &["u@small.test"], now - 100_000),
        message(Some("news"), &["t@other.test"], now - 30),
    ];
    let mut table = Table::default();
    for (i, m) in msgs.iter().enumerate() {
        table.insert(m.clone(), i % 2 == 0);
    }
    // An attempt delivered one recipient of the second; an operator held the third.
    msgs[1].state.recipients[1].status = RecipientStatus::Delivered;
    table.update(&msgs[1]);
    msgs[2].state.hold();
    table.update(&msgs[2]);
    table.schedule(&msgs[2].id, None);
    // The fourth is deleted while attempted, then its round ends.
    table.set_in_flight(&msgs[3].id, true);
    table.mark_deleted(&msgs[3].id);
    assert_eq!(table.in_flight(), 1);
    table.remove(&msgs[3].id);
    assert_eq!(table.in_flight(), 0);

    let mut walked = Tally::default();
    for m in &msgs[..3] {
        walked.add(m, false, now);
    }
    let mut expected = walked.finish();
    let mut kept = table.tally(now).finish();
    assert_eq!(kept.due, 2, "the two not held are due since their arrival");
    for s in [&mut expected, &mut kept] {
        s.domains.sort_by(|a, b| a.key.cmp(&b.key));
        s.apps.sort_by(|a, b| a.key.cmp(&b.key));
    }
    assert_eq!(kept, expected);
    assert_eq!(kept.held, 1);
    assert_eq!(table.depth(), (3, Some(now - 100_000)));
    assert_eq!(table.page(None, 2).len(), 2);
    assert_eq!(table.page(Some(&msgs[1].id), 10), [msgs[2].id.clone()]);
}

/// A message waiting on disk costs its entry alone (32 bytes and its key): nothing is
/// left beside it once its attempt is recorded, whatever it went through meanwhile.
#[test]
fn a_message_waiting_on_disk_keeps_only_its_entry() {
    assert!(std::mem::size_of::<Entry>() <= 32);
    assert_eq!(std::mem::align_of::<(Key, Entry)>(), 8);
    let mut table = Table::default();
    let spread = message(Some("shop"), &["x@a.test", "y@b.test"], 5);
    let plain = message(None, &["z@a.test"], 6);
    for m in [&spread, &plain] {
        table.insert(m.clone(), true);
        let _lock = table.serial(&m.id);
        table.set_in_flight(&m.id, true);
        assert!(table.take_kept(&m.id).is_some());
        table.set_control_seq(&m.id, 3);
    }
    assert_eq!(table.hot.len(), 2);
    assert_eq!(
        table.spread.len(),
        1,
        "two domains: listed beside the entry"
    );
    for m in [&spread, &plain] {
        table.set_control_seq(&m.id, 0);
        table.set_in_flight(&m.id, false);
        table.settle(&m.id);
    }
    assert!(table.hot.is_empty(), "lock and copy gone once settled");
    table.remove(&spread.id);
    assert!(table.spread.is_empty());
    assert_eq!(table.depth().0, 1);
}

/// A burst of arrivals is noticed, and once over the schedule made again holds the same
/// messages in the same order.
#[test]
fn after_a_burst_the_schedule_is_made_again_unchanged() {
    let mut table = Table::default();
    let msgs: Vec<_> = (0..BURST)
        .map(|i| message(None, &["x@a.test"], 10_000 - i % 700))
        .collect();
    for m in &msgs {
        table.insert(m.clone(), false);
    }
    assert!(table.burst_pending());
    let before: Vec<_> = table.schedule.iter().copied().collect();
    assert_eq!(table.burst_over(), BURST);
    assert!(!table.burst_pending());
    assert!(table.schedule.iter().copied().eq(before));
    assert_eq!(table.first_due().map(|(due, _)| due), Some(9_301_000));
    table.schedule(&msgs[0].id, None);
    assert_eq!(table.schedule.len() as u64, BURST - 1);
}

#[test]
fn the_schedule_gives_the_earliest_message_first() {
    let mut table = Table::default();
    let (a, b) = (
        message(None, &["x@a.test"], 5),
        message(None, &["y@b.test"], 3),
    );
    table.insert(a.clone(), false);
    table.insert(b.clone(), false);
    assert_eq!(table.first_due(), Some((3000, b.id.clone())));
    table.schedule(&b.id, None);
    assert_eq!(table.first_due(), Some((5000, a.id.clone())));
    table.schedule(&a.id, Some(9000));
    table.schedule(&b.id, Some(7000));
    assert_eq!(table.first_due(), Some((7000, b.id)));
}
