//! Tests of the file-system spool ([`super::Disk`], through [`crate::spool::FsBackend`]): segments, files, recovery.

use super::*;
use crate::spool::Spool;

fn envelope() -> Envelope {
    Envelope {
        app: Some("demo".into()),
        mail_from: "a@example.test".into(),
        mail_from_params: vec![],
        recipients: vec!["b@example.org".into(), "c@example.net".into()],
        received_at: 1,
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client".into(),
        tls: None,
        tls_report: false,
        tls_request: crate::spool::TlsRequest::Policy,
        return_path_domain: None,
    }
}

/// Stores `n` small messages (`Subject: 0` …) and returns their ids in order.
async fn store_small(spool: &Spool, n: usize) -> Vec<QueueId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let data = format!("Subject: {i}\r\n\r\nhi\r\n").into_bytes();
        ids.push(spool.store(envelope(), data).await.unwrap());
    }
    ids
}

#[tokio::test]
async fn store_recover_update_remove() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut arrivals) = Spool::open_dir(dir.path()).unwrap();
    let id = spool
        .store(envelope(), b"Subject: x\r\n\r\nhi\r\n".to_vec())
        .await
        .unwrap();
    assert_eq!(arrivals.recv().await.unwrap().id, id);
    // A partial write left by a crash is discarded on recovery.
    fs::write(dir.path().join("tmp/0000.msg"), b"{partial").unwrap();
    let all = spool.recover().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].envelope, envelope());
    assert_eq!(all[0].size, 18);
    assert!(
        fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(
        &spool.read_message(&id).await.unwrap()[..],
        b"Subject: x\r\n\r\nhi\r\n"
    );
    let mut state = all[0].state.clone();
    state.recipients[0].status = super::super::RecipientStatus::Delivered;
    spool.write_state(&id, &state).await.unwrap();
    assert_eq!(spool.load(&id).await.unwrap().state, state);
    spool.remove(&id).await.unwrap();
    assert!(spool.recover().await.unwrap().is_empty());
    assert!(spool.load("../etc").await.is_err());
}

#[tokio::test]
async fn state_changes_recorded_together_each_land_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let ids = store_small(&spool, 5).await;
    let mut writes = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let (spool, id) = (spool.clone(), id.clone());
        let mut state = spool.load(&id).await.unwrap().state;
        state.recipients[0].attempts = n as u32 + 1;
        writes.push(tokio::spawn(
            async move { spool.record_state(&id, state).await },
        ));
    }
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let reopened = Disk::open(dir.path()).unwrap();
    for (n, id) in ids.iter().enumerate() {
        let attempts = reopened.load(id).unwrap().state.recipients[0].attempts;
        assert_eq!(attempts, n as u32 + 1, "{id}");
    }
}

#[tokio::test]
async fn removals_are_grouped_and_take_their_state_files_along() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let ids = store_small(&spool, 4).await;
    // One was deferred once (it has a state file); the others never were.
    let mut state = spool.load(&ids[0]).await.unwrap().state;
    state.recipients[0].attempts = 1;
    spool.write_state(&ids[0], &state).await.unwrap();
    let removals: Vec<_> = ids
        .iter()
        .map(|id| {
            let (spool, id) = (spool.clone(), id.clone());
            tokio::spawn(async move { spool.remove_finished(&id).await })
        })
        .collect();
    for removal in removals {
        removal.await.unwrap().unwrap();
    }
    assert!(spool.recover().await.unwrap().is_empty());
    assert!(
        fs::read_dir(dir.path().join("msg"))
            .unwrap()
            .next()
            .is_none(),
        "no message or state file is left"
    );
    // A state written by another process (found on loading) goes too.
    let id = spool
        .store(envelope(), b"Subject: x\r\n\r\nhi\r\n".to_vec())
        .await
        .unwrap();
    let other = Disk::open(dir.path()).unwrap();
    other.write_state(&id, &state).unwrap();
    spool.load(&id).await.unwrap();
    assert_eq!(spool.remove_batch(std::slice::from_ref(&id)).await.len(), 1);
    assert!(
        fs::read_dir(dir.path().join("msg"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn a_small_message_needs_no_file_until_it_must_wait_for_a_later_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let text = b"Subject: small\r\n\r\nhi\r\n";
    let mut body = spool.stage().unwrap();
    body.write(text).unwrap();
    let id = spool
        .commit(envelope(), b"Received: z\r\n".to_vec(), body)
        .await
        .unwrap();
    let files = |sub: &str| fs::read_dir(dir.path().join(sub)).unwrap().count();
    assert_eq!((files("tmp"), files("msg"), files("seg")), (0, 0, 1));
    let expected = [&b"Received: z\r\n"[..], text].concat();
    assert_eq!(&spool.read_message(&id).await.unwrap()[..], &expected[..]);
    assert_eq!(spool.load(&id).await.unwrap().size, expected.len() as u64);

    // Deferred: it moves to a file of its own, which a reopen keeps (one copy).
    let mut state = spool.load(&id).await.unwrap().state;
    state.recipients[0].attempts = 1;
    spool.write_state(&id, &state).await.unwrap();
    assert_eq!(files("msg"), 2, "message and state files");
    drop(spool);
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let recovered = spool.recover().await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].state.recipients[0].attempts, 1);
    assert_eq!(&spool.read_message(&id).await.unwrap()[..], &expected[..]);
    assert_eq!(files("seg"), 0, "the emptied segment is gone");
    spool.remove_finished(&id).await.unwrap();
    assert!(spool.recover().await.unwrap().is_empty());
    assert_eq!(files("msg"), 0);
}

#[tokio::test]
async fn a_removed_segment_message_stays_removed_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let ids = store_small(&spool, 3).await;
    spool.remove_finished(&ids[1]).await.unwrap();
    drop(spool);
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let left: Vec<_> = spool
        .recover()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, [ids[0].clone(), ids[2].clone()]);
    let entries = spooled_entries(dir.path()).unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries[1].1.ends_with(b"Subject: 2\r\n\r\nhi\r\n"));
}

#[tokio::test]
async fn only_a_removal_record_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let ids = store_small(&spool, 2).await;
    let backend = Disk::open(dir.path()).unwrap();
    backend.recover().unwrap();
    // Deferred once: its own message and state files need unlinks and a directory flush.
    let mut state = backend.load(&ids[0]).unwrap().state;
    state.recipients[0].attempts = 1;
    backend.write_state(&ids[0], &state).unwrap();
    assert!(backend.remove_in_place(&ids[0]).is_none());
    assert!(backend.remove_in_place(&ids[1]).unwrap().is_ok());
    assert!(backend.remove_in_place(&ids[1]).is_none(), "already gone");
    let left: Vec<_> = backend
        .recover()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, [ids[0].clone()]);
}

#[tokio::test]
async fn opening_a_spool_in_use_changes_nothing_until_recovery() {
    // A second `herald serve` opens the spool before it finds the lock taken: its open
    // must not delete the running herald's (empty) current segment.
    let dir = tempfile::tempdir().unwrap();
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let first = spool
        .store(envelope(), b"Subject: 1\r\n\r\nx\r\n".to_vec())
        .await
        .unwrap();
    spool.remove_finished(&first).await.unwrap();
    let second_herald = Disk::open(dir.path()).unwrap();
    drop(second_herald);
    let kept = spool
        .store(envelope(), b"Subject: 2\r\n\r\ny\r\n".to_vec())
        .await
        .unwrap();
    drop(spool);
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let ids: Vec<_> = spool
        .recover()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, std::slice::from_ref(&kept));
    assert_eq!(
        &spool.read_message(&kept).await.unwrap()[..],
        b"Subject: 2\r\n\r\ny\r\n"
    );
}

#[tokio::test]
async fn a_staged_message_commits_whether_or_not_its_envelope_fits_in_front() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let mut many = envelope();
    many.recipients = (0..400)
        .map(|i| format!("recipient-number-{i}@example.org"))
        .collect();
    for env in [envelope(), many] {
        let mut body = spool.stage().unwrap();
        body.write(b"Subject: x\r\n\r\n").unwrap();
        body.write(&vec![b'y'; 100_000]).unwrap();
        let id = spool
            .commit(env.clone(), b"Received: z\r\n".to_vec(), body)
            .await
            .unwrap();
        let loaded = spool.load(&id).await.unwrap();
        assert_eq!(loaded.envelope, env);
        assert_eq!(loaded.size, 13 + 14 + 100_000);
        let bytes = spool.read_message(&id).await.unwrap();
        assert!(bytes.starts_with(b"Received: z\r\nSubject: x\r\n\r\nyyy"));
        assert_eq!(bytes.len(), 13 + 14 + 100_000);
    }
    assert!(
        fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "nothing staged is left"
    );
}

/// The queue's recovery: every message stored before the start comes in chunks (deferred
/// ones with their state, from their own files), none stored after it (the queue gets those
/// as they arrive), while new messages are stored meanwhile.
#[tokio::test]
async fn recovery_in_chunks_brings_everything_stored_before_the_start_and_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let old = {
        let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
        // Stored concurrently: grouped commits, a fraction of a second.
        let stores = (0..200).map(|i| {
            let data = format!("Subject: {i}\r\n\r\nhi\r\n").into_bytes();
            spool.store(envelope(), data)
        });
        let mut ids: Vec<QueueId> = futures_util::future::join_all(stores)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        ids.sort();
        // A third wait for a later attempt: they move to files of their own.
        let mut state = DeliveryState::new(&envelope());
        state.recipients[0].attempts = 1;
        let writes = ids
            .iter()
            .step_by(3)
            .map(|id| spool.write_state(id, &state));
        for written in futures_util::future::join_all(writes).await {
            written.unwrap();
        }
        ids
    };
    let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
    let mut chunks = spool.recover_chunks().await.unwrap();
    let new = store_small(&spool, 5).await;
    let mut got = Vec::new();
    let mut count = 0;
    while let Some(chunk) = chunks.recv().await {
        count += 1;
        got.extend(chunk.unwrap());
    }
    assert!(count >= 3, "{count} chunk(s)");
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, old.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(got[0].state.recipients[0].attempts, 1);
    assert_eq!(got[1].state.recipients[0].attempts, 0);
    assert!(new.iter().all(|id| !ids.contains(&id.as_str())));
    assert_eq!(spool.recover().await.unwrap().len(), old.len() + new.len());
}
