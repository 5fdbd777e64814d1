//! Power cuts under steady submission and delivery: at every durability call of one group
//! commit, at random durability calls (between two calls nothing reaches the disk, so a cut at
//! a call stands for every instant before it), and during recovery. Every message answered
//! 250 must be delivered; duplicates are counted.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::rig::{PowerRig, Tally};

/// Every durability call one group commit makes, found by counting them for one message.
fn sweep_one_group(rig: &mut PowerRig, big: bool) {
    rig.start();
    let before = rig.lazy().calls().total();
    assert_eq!(
        rig.submit_until_cut(1, 1, usize::from(big)),
        1,
        "one message accepted"
    );
    let calls = rig.lazy().calls().total() - before;
    assert!(
        calls > 0,
        "a group commit makes at least one durability call"
    );
    rig.cut_now();
    rig.cuts += 1;
    for n in 1..=calls {
        rig.start();
        rig.lazy().cut_at_call(n);
        rig.submit_until_cut(1, 3, usize::from(big));
        rig.cut_now();
        rig.cuts += 1;
    }
}

/// `cuts` cuts at random durability calls while four clients submit (every seventh message
/// large) and herald delivers; every third restart is cut during its recovery too.
pub fn random_cuts(rig: &mut PowerRig, cuts: u64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..cuts {
        if i % 3 == 2 {
            let n = rng.gen_range(1..=4);
            rig.start_cut_in_recovery(n);
        }
        rig.start();
        rig.lazy().cut_at_call(rng.gen_range(1..=40));
        rig.submit_until_cut(4, 40, 7);
        rig.cut_now();
        rig.cuts += 1;
    }
}

/// The seed of the random cuts: `POWERCUT_SEED`, else the clock (printed, to replay a run).
pub fn seed() -> u64 {
    let seed = std::env::var("POWERCUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(herald::clock::unix_now);
    eprintln!("power cuts: POWERCUT_SEED={seed}");
    seed
}

fn check(tally: &Tally) {
    eprintln!(
        "power cuts: {} in service + {} during recovery; {} acknowledged, {} delivered, \
         {} lost, {} duplicates ({} unacknowledged delivered too)",
        tally.cuts,
        tally.recovery_cuts,
        tally.acknowledged,
        tally.delivered,
        tally.lost,
        tally.duplicates,
        tally.unacknowledged_delivered
    );
    assert_eq!(
        tally.lost, 0,
        "every message answered 250 is delivered: {tally:?}"
    );
    assert!(tally.acknowledged > 0, "{tally:?}");
}

#[test]
fn power_cuts_at_every_call_of_a_group_commit_and_at_random_lose_nothing_acknowledged() {
    let mut rig = PowerRig::new();
    sweep_one_group(&mut rig, false);
    sweep_one_group(&mut rig, true);
    random_cuts(&mut rig, 12, seed());
    check(&rig.finish());
}

/// The long run behind the README's figures: `POWERCUT_CUTS` random cuts (default 300).
/// `POWERCUT_CUTS=300 cargo test --release --test e2e power::cut::long -- --ignored --nocapture`
#[test]
#[ignore = "minutes long: the README's power-cut figures"]
fn long_run_of_power_cuts() {
    let cuts = std::env::var("POWERCUT_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rig = PowerRig::new();
    sweep_one_group(&mut rig, false);
    sweep_one_group(&mut rig, true);
    random_cuts(&mut rig, cuts, seed());
    check(&rig.finish());
}

#[test]
fn removals_are_flushed_within_a_second_so_a_later_cut_delivers_nothing_twice() {
    let mut rig = PowerRig::new();
    rig.start();
    let subjects = ["flushed-1", "flushed-2", "flushed-3"];
    assert!(
        rig.send_each(&subjects, false)
            .iter()
            .all(|r| r.code == 250)
    );
    rig.sink.wait_for_messages(3, Duration::from_secs(30));
    // herald records each delivery (a removal record, not flushed at once) after the MX's
    // 250: wait for those records, then for the once-a-second flush that makes them durable.
    let herald = rig.herald.as_mut().expect("herald");
    for _ in 0..3 {
        herald.wait_for_log("finished: every recipient", Duration::from_secs(30));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.lazy().all_flushed() {
        assert!(
            Instant::now() < deadline,
            "removal records still unflushed after 10 s"
        );
        // The flush is herald's timer: polled, with a deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
    rig.cut_now();
    rig.cuts += 1;
    let tally = rig.finish();
    assert_eq!((tally.lost, tally.duplicates), (0, 0), "{tally:?}");
}
