//! Spool tests against real files in temporary directories.

use super::*;

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// With `seq_block` 1 every group commit reserves exactly the seqs it uses,
/// so a reopen continues at exactly the next seq and tests can assert exact
/// numbers; the reservation tests below set real block sizes.
fn config(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
        seq_block: 1,
    }
}

fn with_seq_block(mut cfg: SpoolConfig, seq_block: u64) -> SpoolConfig {
    cfg.seq_block = seq_block;
    cfg
}

fn reservation_path(dir: &Path) -> PathBuf {
    dir.join(SEQ_RESERVATION_FILE)
}

fn stored_seq_limit(dir: &Path) -> Option<u64> {
    read_seq_limit(dir).unwrap()
}

fn seq_reservations(spool: &Spool) -> u64 {
    spool.inner.shared.lock().seq_reservations
}

/// Distinct, variable-length payloads so a mix-up between records shows.
fn payload(i: u64) -> Bytes {
    Bytes::from(format!("batch-{i:06}-{}", "x".repeat((i % 37) as usize)))
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            match parse_name(&name) {
                Some((base, SEGMENT_EXT)) => Some(base),
                _ => None,
            }
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn all_pending(spool: &Spool) -> Vec<SpooledBatch> {
    spool.pending_after(None, usize::MAX).unwrap()
}

fn seqs(batches: &[SpooledBatch]) -> Vec<u64> {
    batches.iter().map(|b| b.seq).collect()
}

/// Polls `cond` until it holds; work done by the writer thread after a call
/// returned (such as unlinking a segment) is only observable this way.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn append_all(spool: &Spool, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut out = Vec::new();
    for i in range {
        out.push(spool.append(payload(i)).await.unwrap());
    }
    out
}

#[tokio::test]
async fn reopen_returns_exactly_unacked_batches_in_order_and_continues_seq() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 512);
    let acked: BTreeSet<u64> = [0, 3, 4, 9, 17, 30, 48, 49].into();
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        let got = append_all(&spool, 0..50).await;
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        for &seq in acked.iter().rev() {
            spool.ack(seq).unwrap();
        }
        assert!(
            segment_bases(tmp.path()).len() > 3,
            "test needs several segments"
        );
    }
    let spool = Spool::open(cfg.clone()).unwrap();
    let expected: Vec<SpooledBatch> = (0..50)
        .filter(|i| !acked.contains(i))
        .map(|i| SpooledBatch {
            seq: i,
            payload: payload(i),
        })
        .collect();
    assert_eq!(all_pending(&spool), expected);
    let stats = spool.stats();
    assert_eq!(stats.pending_batches, expected.len() as u64);
    assert_eq!(
        stats.pending_bytes,
        expected.iter().map(|b| b.payload.len() as u64).sum::<u64>()
    );
    assert_eq!(stats.next_seq, 50);

    // Paging as the forwarder does it.
    let page = spool.pending_after(Some(17), 3).unwrap();
    assert_eq!(seqs(&page), vec![18, 19, 20]);
    assert!(spool.pending_after(Some(47), 10).unwrap().is_empty());
    assert!(spool.pending_after(Some(u64::MAX), 10).unwrap().is_empty());

    assert_eq!(spool.append(payload(50)).await.unwrap(), 50);
    spool.ack(1).unwrap();
    drop(spool);

    let spool = Spool::open(cfg).unwrap();
    let pending = all_pending(&spool);
    assert_eq!(pending.first().map(|b| b.seq), Some(2));
    assert_eq!(
        pending.last(),
        Some(&SpooledBatch {
            seq: 50,
            payload: payload(50)
        })
    );
    assert_eq!(pending.len(), expected.len());
    assert_eq!(spool.append(payload(51)).await.unwrap(), 51);
}

/// Appends 0..n into one directory and closes the spool; returns the
/// segment bases it left.
async fn fill(cfg: &SpoolConfig, n: u64) -> Vec<u64> {
    let spool = Spool::open(cfg.clone()).unwrap();
    append_all(&spool, 0..n).await;
    drop(spool);
    segment_bases(&cfg.dir)
}

async fn assert_recovers_to(cfg: &SpoolConfig, intact: std::ops::Range<u64>) {
    let spool = Spool::open(cfg.clone()).unwrap();
    let expected: Vec<SpooledBatch> = intact
        .clone()
        .map(|i| SpooledBatch {
            seq: i,
            payload: payload(i),
        })
        .collect();
    assert_eq!(all_pending(&spool), expected);
    // New appends land after the good prefix and survive another reopen.
    let new_seq = spool
        .append(Bytes::from_static(b"after-recovery"))
        .await
        .unwrap();
    assert!(new_seq >= intact.end);
    drop(spool);
    let spool = Spool::open(cfg.clone()).unwrap();
    let pending = all_pending(&spool);
    assert_eq!(pending[..expected.len()], expected[..]);
    assert_eq!(
        pending[expected.len()..],
        [SpooledBatch {
            seq: new_seq,
            payload: Bytes::from_static(b"after-recovery"),
        }]
    );
    assert_eq!(spool.append(payload(999)).await.unwrap(), new_seq + 1);
}

#[tokio::test]
async fn torn_tail_cut_mid_record_is_dropped_and_spool_keeps_working() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    let bases = fill(&cfg, 10).await;
    assert_eq!(bases, vec![0]);
    let path = segment_path(tmp.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    // Cut 5 bytes off the last record's payload, as a crash mid-write would.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    assert_recovers_to(&cfg, 0..9).await;
}

#[tokio::test]
async fn torn_tail_cut_inside_header_is_dropped() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    fill(&cfg, 10).await;
    let path = segment_path(tmp.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    let last = RECORD_HEADER_BYTES + payload(9).len() as u64;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - last + 7)
        .unwrap();
    assert_recovers_to(&cfg, 0..9).await;
}

fn flip_byte(path: &Path, offset: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
}

/// A whole last record with a bad checksum may be bit rot of a batch a client was
/// told is stored: set aside (for the dead-letter directory), not cut off.
#[tokio::test]
async fn flipped_byte_in_last_record_sets_it_aside_with_its_seq() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    fill(&cfg, 10).await;
    let path = segment_path(tmp.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - 3);
    let spool = Spool::open(cfg.clone()).unwrap();
    let corrupt = spool.corrupt_records();
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert_eq!(
        (corrupt[0].seq, corrupt[0].offset),
        (Some(9), record_offset(0, 9))
    );
    assert_eq!(
        corrupt[0].bytes.len() as u64,
        len - record_offset(0, 9),
        "all its bytes kept"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "nothing truncated");
    drop(spool);
    assert_recovers_to(&cfg, 0..9).await;
}

#[tokio::test]
async fn flipped_seq_in_header_is_detected() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    fill(&cfg, 10).await;
    let path = segment_path(tmp.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    let last = RECORD_HEADER_BYTES + payload(9).len() as u64;
    // Low byte of the seq field of the last record: 9 becomes 73, still
    // increasing, so only the checksum can catch it.
    flip_byte(&path, len - last + 8);
    let spool = Spool::open(cfg.clone()).unwrap();
    let corrupt = spool.corrupt_records();
    // 73 is beyond every seq handed out (the reservation is 10): not trusted.
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert_eq!((corrupt[0].seq, corrupt[0].offset), (None, len - last));
    drop(spool);
    assert_recovers_to(&cfg, 0..9).await;
}

#[tokio::test]
async fn corruption_in_an_older_segment_keeps_later_segments() {
    let tmp = TempDir::new().unwrap();
    // Records of payload(i) for i < 37 are 33..69 bytes; 512-byte segments
    // hold several.
    let cfg = config(tmp.path(), 1 << 20, 512);
    let bases = fill(&cfg, 30).await;
    assert!(bases.len() >= 3, "{bases:?}");
    let (first, second) = (bases[0], bases[1]);
    // Corrupt the second record of the first segment.
    let rec0 = RECORD_HEADER_BYTES + payload(first).len() as u64;
    flip_byte(
        &segment_path(tmp.path(), first),
        rec0 + RECORD_HEADER_BYTES + 2,
    );

    let spool = Spool::open(cfg.clone()).unwrap();
    let got = seqs(&all_pending(&spool));
    // Only the damaged record is missing: the ones behind it in its segment
    // are still delivered.
    let expected: Vec<u64> = (0..30).filter(|&s| s != first + 1).collect();
    assert!(
        second > first + 2,
        "the victim must have records behind it: {bases:?}"
    );
    assert_eq!(got, expected);
    assert_eq!(
        spool
            .corrupt_records()
            .iter()
            .map(|c| c.seq)
            .collect::<Vec<_>>(),
        [Some(first + 1)]
    );
    for b in all_pending(&spool) {
        assert_eq!(b.payload, payload(b.seq));
    }
    assert_eq!(spool.append(payload(30)).await.unwrap(), 30);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_truncated() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    fill(&cfg, 5).await;
    let path = segment_path(tmp.path(), 0);
    // A filesystem can expose zeros past the last write after a power loss.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0u8; 100])
        .unwrap();
    assert_recovers_to(&cfg, 0..5).await;
}

#[tokio::test]
async fn full_spool_rejects_fast_and_accepts_again_after_acks_free_a_segment() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 2048, 1024);
    let spool = Spool::open(cfg.clone()).unwrap();
    let body = |i: u64| Bytes::from(vec![i as u8; 200]);
    let record = RECORD_HEADER_BYTES + 200;

    let mut stored = Vec::new();
    let err = loop {
        match spool.append(body(stored.len() as u64)).await {
            Ok(seq) => stored.push(seq),
            Err(e) => break e,
        }
        assert!(stored.len() < 100, "never became full");
    };
    // 4 records per 1024-byte segment; a 10th record would pass 2048.
    assert_eq!(stored, (0..9).collect::<Vec<_>>());
    match &err {
        SpoolError::Full {
            used_bytes,
            max_bytes,
        } => {
            assert_eq!(*used_bytes, 9 * record);
            assert_eq!(*max_bytes, 2048);
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(spool.stats().used_bytes, 9 * record);
    assert_eq!(segment_bases(tmp.path()), vec![0, 4, 8]);

    // Acking part of the first segment frees nothing.
    for seq in [2, 0, 1] {
        spool.ack(seq).unwrap();
    }
    assert!(matches!(
        spool.append(body(9)).await,
        Err(SpoolError::Full { .. })
    ));
    spool.ack(3).unwrap();
    assert_eq!(spool.stats().used_bytes, 5 * record);
    let seq = spool.append(body(9)).await.unwrap();
    assert_eq!(seq, 9);
    // The writer unlinks before it writes the next commit.
    assert_eq!(segment_bases(tmp.path()), vec![4, 8]);

    let pending = all_pending(&spool);
    assert_eq!(seqs(&pending), vec![4, 5, 6, 7, 8, 9]);
    for b in &pending {
        assert_eq!(b.payload, body(b.seq));
    }
    drop(spool);
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(all_pending(&spool), pending);
    assert_eq!(spool.stats().used_bytes, 6 * record);
}

#[test]
fn concurrent_appends_get_distinct_seqs_share_fsyncs_and_are_readable() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 64 << 20, 64 << 10);
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 25;
    let results = rt.block_on(async {
        let spool = Spool::open(cfg.clone()).unwrap();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..PER_TASK {
                    let p = payload(t * 1000 + i);
                    got.push((spool.append(p.clone()).await.unwrap(), p));
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        (all, spool.stats(), all_pending(&spool))
    });
    let (appended, stats, pending) = results;
    let total = TASKS * PER_TASK;
    let by_seq: BTreeMap<u64, Bytes> = appended.into_iter().collect();
    assert_eq!(
        by_seq.len() as u64,
        total,
        "sequence numbers must be distinct"
    );
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    assert_eq!(stats.appends, total);
    assert!(
        stats.fsyncs < total,
        "no group commit: {} fsyncs for {total} appends",
        stats.fsyncs
    );
    let expect: Vec<SpooledBatch> = by_seq
        .iter()
        .map(|(&seq, p)| SpooledBatch {
            seq,
            payload: p.clone(),
        })
        .collect();
    assert_eq!(pending, expect);
    // And from disk, after a restart.
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(all_pending(&spool), expect);
}

#[tokio::test]
async fn out_of_order_acks_delete_a_segment_only_when_all_its_records_are_acked() {
    let tmp = TempDir::new().unwrap();
    // 100-byte payloads, 120-byte records: 3 per 400-byte segment.
    let cfg = config(tmp.path(), 1 << 20, 400);
    let spool = Spool::open(cfg.clone()).unwrap();
    let body = |i: u64| Bytes::from(vec![b'a' + i as u8; 100]);
    for i in 0..9 {
        assert_eq!(spool.append(body(i)).await.unwrap(), i);
    }
    let dir = tmp.path();
    assert_eq!(segment_bases(dir), vec![0, 3, 6]);

    for seq in [7, 2, 0, 5, 3] {
        spool.ack(seq).unwrap();
    }
    // Give the writer every chance to (wrongly) delete something.
    spool.ack(2).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(segment_bases(dir), vec![0, 3, 6]);
    assert_eq!(seqs(&all_pending(&spool)), vec![1, 4, 6, 8]);

    spool.ack(1).unwrap();
    assert_eq!(spool.stats().segments, 2);
    eventually("segment 0 and its ack log are deleted", || {
        segment_bases(dir) == vec![3, 6] && !ack_path(dir, 0).exists()
    })
    .await;

    spool.ack(4).unwrap();
    eventually("segment 3 is deleted", || segment_bases(dir) == vec![6]).await;

    // The active segment stays, even fully acked, until the writer rolls.
    spool.ack(8).unwrap();
    spool.ack(6).unwrap();
    assert!(all_pending(&spool).is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(segment_bases(dir), vec![6]);
    assert_eq!(spool.append(body(9)).await.unwrap(), 9);
    assert_eq!(segment_bases(dir), vec![9]);

    // Repeated and unknown acks.
    spool.ack(6).unwrap();
    match spool.ack(10) {
        Err(SpoolError::UnknownSeq {
            seq: 10,
            next_seq: 10,
        }) => {}
        other => panic!("expected UnknownSeq, got {other:?}"),
    }
    drop(spool);
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(
        all_pending(&spool),
        vec![SpooledBatch {
            seq: 9,
            payload: body(9)
        }]
    );
}

#[tokio::test]
async fn acks_of_the_active_segment_survive_reopen() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        append_all(&spool, 0..6).await;
        for seq in [5, 1, 3] {
            spool.ack(seq).unwrap();
        }
    }
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(seqs(&all_pending(&spool)), vec![0, 2, 4]);
}

#[tokio::test]
async fn damaged_ack_log_entries_only_cause_resends() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        append_all(&spool, 0..6).await;
        spool.ack(1).unwrap();
        spool.ack(2).unwrap();
    }
    let path = ack_path(tmp.path(), 0);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        2 * ACK_ENTRY_BYTES as u64
    );
    // Damage the second entry and add zeros and a partial entry, as an
    // unsynced file may show after a power loss. Zeros must not ack seq 0.
    flip_byte(&path, ACK_ENTRY_BYTES as u64 + 1);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0u8; ACK_ENTRY_BYTES * 2 + 5]).unwrap();
    drop(f);
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(seqs(&all_pending(&spool)), vec![0, 2, 3, 4, 5]);
}

#[tokio::test]
async fn wait_for_more_and_wait_acked_wake_up() {
    let tmp = TempDir::new().unwrap();
    let spool = Spool::open(config(tmp.path(), 1 << 20, 1 << 16)).unwrap();
    let short = Duration::from_millis(50);
    let long = Duration::from_secs(10);

    let waiter = tokio::spawn({
        let spool = spool.clone();
        async move { spool.wait_for_more(None).await }
    });
    tokio::time::sleep(short).await;
    assert!(!waiter.is_finished(), "woke up on an empty spool");
    let s0 = spool.append(payload(0)).await.unwrap();
    tokio::time::timeout(long, waiter).await.unwrap().unwrap();

    // Nothing after s0 yet.
    let waiter = tokio::spawn({
        let spool = spool.clone();
        async move { spool.wait_for_more(Some(s0)).await }
    });
    tokio::time::sleep(short).await;
    assert!(!waiter.is_finished());
    let s1 = spool.append(payload(1)).await.unwrap();
    tokio::time::timeout(long, waiter).await.unwrap().unwrap();
    // Already satisfied: returns at once.
    tokio::time::timeout(long, spool.wait_for_more(Some(s0)))
        .await
        .unwrap();

    let acked = tokio::spawn({
        let spool = spool.clone();
        async move { spool.wait_acked(s1).await }
    });
    tokio::time::sleep(short).await;
    assert!(!acked.is_finished());
    spool.ack(s0).unwrap();
    tokio::time::sleep(short).await;
    assert!(!acked.is_finished(), "woke up for another seq's ack");
    spool.ack(s1).unwrap();
    tokio::time::timeout(long, acked).await.unwrap().unwrap();
    tokio::time::timeout(long, spool.wait_acked(s0))
        .await
        .unwrap();

    // Everything acked: waiting for more must wait, not spin on acked seqs.
    let waiter = tokio::spawn({
        let spool = spool.clone();
        async move { spool.wait_for_more(None).await }
    });
    tokio::time::sleep(short).await;
    assert!(!waiter.is_finished(), "woke up with nothing pending");
    spool.append(payload(2)).await.unwrap();
    tokio::time::timeout(long, waiter).await.unwrap().unwrap();
}

#[tokio::test]
async fn seq_never_goes_back_after_every_batch_was_acked_and_deleted() {
    let tmp = TempDir::new().unwrap();
    // Two 120-byte records per 250-byte segment.
    let cfg = config(tmp.path(), 1 << 20, 250);
    let body = Bytes::from(vec![7u8; 100]);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        for i in 0..5 {
            assert_eq!(spool.append(body.clone()).await.unwrap(), i);
            spool.ack(i).unwrap();
        }
    }
    assert_eq!(segment_bases(tmp.path()), vec![4]);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        assert!(all_pending(&spool).is_empty());
        assert_eq!(spool.stats().next_seq, 5);
        assert_eq!(spool.append(body.clone()).await.unwrap(), 5);
    }
    // Only the name of an empty segment is left: it is the floor.
    for base in segment_bases(tmp.path()) {
        fs::remove_file(segment_path(tmp.path(), base)).unwrap();
        let _ = fs::remove_file(ack_path(tmp.path(), base));
    }
    File::create(segment_path(tmp.path(), 42)).unwrap();
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(spool.stats().next_seq, 42);
    assert_eq!(spool.append(body).await.unwrap(), 42);
}

#[tokio::test]
async fn failed_fsync_rejects_the_batch_and_never_resurrects_it() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    let spool = Spool::open(cfg.clone()).unwrap();
    append_all(&spool, 0..3).await;
    let before = spool.stats();

    spool
        .inner
        .shared
        .fail_next_sync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = spool.append(payload(100)).await.unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err:?}");
    assert!(err.is_retryable());
    let after = spool.stats();
    assert_eq!(after.used_bytes, before.used_bytes, "reservation released");
    assert_eq!(after.pending_batches, 3);

    // The failed seq is burned and the next append goes to a fresh file.
    let seq = spool.append(payload(3)).await.unwrap();
    assert_eq!(seq, 4);
    assert_eq!(segment_bases(tmp.path()), vec![0, 4]);
    let expected = |seqs: &[u64]| -> Vec<SpooledBatch> {
        seqs.iter()
            .map(|&seq| SpooledBatch {
                seq,
                payload: payload(if seq == 4 { 3 } else { seq }),
            })
            .collect()
    };
    assert_eq!(all_pending(&spool), expected(&[0, 1, 2, 4]));
    drop(spool);
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(all_pending(&spool), expected(&[0, 1, 2, 4]));
}

#[tokio::test]
async fn pending_after_reads_uncached_batches_and_sets_a_corrupt_one_aside() {
    let tmp = TempDir::new().unwrap();
    // Cache budget is max_bytes / 4 = 16 KiB: most of 40 KB stays on disk only.
    let cfg = config(tmp.path(), 64 << 10, 16 << 10);
    let spool = Spool::open(cfg).unwrap();
    let body = |i: u64| Bytes::from(vec![i as u8; 1000]);
    for i in 0..40 {
        assert_eq!(spool.append(body(i)).await.unwrap(), i);
    }
    {
        let st = spool.inner.shared.lock();
        assert!(
            st.index.values().any(|e| e.cached.is_none()),
            "test must exercise disk reads"
        );
    }
    let pending = all_pending(&spool);
    assert_eq!(seqs(&pending), (0..40).collect::<Vec<_>>());
    for b in &pending {
        assert_eq!(b.payload, body(b.seq));
    }

    // 16 records of 1020 bytes per 16 KiB segment: seq 20 is the 5th in 16,
    // with records behind it in its segment and in the next ones.
    let path = segment_path(tmp.path(), 16);
    assert!(spool.inner.shared.lock().index[&20].cached.is_none());
    flip_byte(&path, 4 * 1020 + RECORD_HEADER_BYTES + 10);
    // The forwarder's read past it goes on, without the damaged batch.
    let got = spool.pending_after(Some(10), 100).unwrap();
    assert_eq!(
        seqs(&got),
        (11..40).filter(|&s| s != 20).collect::<Vec<_>>()
    );
    for b in &got {
        assert_eq!(b.payload, body(b.seq));
    }
    tokio::time::timeout(Duration::from_secs(5), spool.wait_for_corrupt())
        .await
        .expect("the dead-letter side is woken");
    let corrupt = spool.corrupt_records();
    assert_eq!(corrupt.len(), 1);
    let c = &corrupt[0];
    assert_eq!((c.segment, c.offset, c.seq), (16, 4 * 1020, Some(20)));
    assert_eq!(c.bytes.len(), 1020, "header and payload kept");
    assert_eq!(c.bytes[RECORD_HEADER_BYTES as usize + 11..], body(20)[11..]);
    assert_eq!(spool.stats().corrupt_records, 1);
    assert_eq!(spool.stats().pending_batches, 39);
    // Not returned again, not an error again.
    assert_eq!(seqs(&spool.pending_after(Some(19), 1).unwrap()), [21]);

    // Resolving it is its ack: once the rest of segment 16 is acked, the file goes.
    spool.resolve_corrupt(c).unwrap();
    spool.resolve_corrupt(c).unwrap();
    assert_eq!(spool.stats().corrupt_records, 0);
    for seq in (16..32).filter(|&s| s != 20) {
        spool.ack(seq).unwrap();
    }
    eventually("segment 16 is deleted", || {
        !segment_path(tmp.path(), 16).exists()
    })
    .await;
    drop(spool);
    let spool = Spool::open(config(tmp.path(), 64 << 10, 16 << 10)).unwrap();
    assert!(spool.corrupt_records().is_empty());
    assert_eq!(
        seqs(&all_pending(&spool)),
        (0..16).chain(32..40).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn too_large_batch_is_rejected_and_the_largest_fits() {
    let tmp = TempDir::new().unwrap();
    let spool = Spool::open(config(tmp.path(), 4096, 1024)).unwrap();
    let max = 1024 - RECORD_HEADER_BYTES as usize;
    match spool.append(Bytes::from(vec![0u8; max + 1])).await {
        Err(e @ SpoolError::TooLarge { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(spool.append(Bytes::from(vec![1u8; max])).await.unwrap(), 0);
    assert_eq!(spool.append(Bytes::from(vec![2u8; max])).await.unwrap(), 1);
    assert_eq!(segment_bases(tmp.path()), vec![0, 1]);
    assert_eq!(spool.append(Bytes::new()).await.unwrap(), 2);
    assert_eq!(all_pending(&spool)[2].payload, Bytes::new());
}

#[tokio::test]
async fn second_open_of_the_same_dir_is_refused_until_the_first_is_dropped() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    let spool = Spool::open(cfg.clone()).unwrap();
    match Spool::open(cfg.clone()) {
        Err(SpoolError::Locked { dir }) => assert_eq!(dir, tmp.path()),
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("expected Locked, got a second spool"),
    }
    let clone = spool.clone();
    drop(spool);
    assert!(matches!(
        Spool::open(cfg.clone()),
        Err(SpoolError::Locked { .. })
    ));
    drop(clone);
    Spool::open(cfg).unwrap();
}

#[test]
fn config_defaults_unknown_fields_and_limits() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Spool>();
    let cfg: SpoolConfig = serde_json::from_str(r#"{"dir": "/var/spool/weir"}"#).unwrap();
    assert_eq!(cfg, SpoolConfig::new("/var/spool/weir"));
    assert_eq!(cfg.max_bytes, 1 << 30);
    assert_eq!(cfg.segment_bytes, 64 << 20);
    assert_eq!(cfg.seq_block, 1 << 16);
    let cfg: SpoolConfig =
        serde_json::from_str(r#"{"dir": "/var/spool/weir", "seq_block": 1000}"#).unwrap();
    assert_eq!(cfg.seq_block, 1000);
    let err = serde_json::from_str::<SpoolConfig>(r#"{"dir": "/x", "max_byte": 5}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err = serde_json::from_str::<SpoolConfig>(r#"{"max_bytes": 5}"#).unwrap_err();
    assert!(err.to_string().contains("missing field `dir`"), "{err}");

    let tmp = TempDir::new().unwrap();
    for (max, seg) in [(1000, 600), (1 << 20, 10), (u64::MAX, 1 << 33)] {
        match Spool::open(config(tmp.path(), max, seg)) {
            Err(SpoolError::InvalidConfig { .. }) => {}
            Err(other) => panic!("({max}, {seg}): expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("({max}, {seg}): expected InvalidConfig, got a spool"),
        }
    }
    for block in [0, MAX_SEQ_BLOCK + 1] {
        let cfg = with_seq_block(config(tmp.path(), 1 << 20, 1 << 16), block);
        match Spool::open(cfg) {
            Err(SpoolError::InvalidConfig { reason }) => {
                assert!(reason.contains("seq_block"), "{reason}")
            }
            Err(other) => panic!("seq_block {block}: expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("seq_block {block}: expected InvalidConfig, got a spool"),
        }
    }
    Spool::open(with_seq_block(
        config(tmp.path(), 1 << 20, 1 << 16),
        MAX_SEQ_BLOCK,
    ))
    .unwrap();
}

#[test]
fn disk_full_errors_map_to_their_own_retryable_variant() {
    let path = Path::new("/spool/00000000000000000000.seg");
    let enospc = io_error("writing segment", path, io::Error::from_raw_os_error(28));
    assert!(matches!(enospc, SpoolError::DiskFull { .. }), "{enospc:?}");
    assert!(enospc.is_retryable());
    assert!(enospc.to_string().contains("out of space"), "{enospc}");
    let edquot = io_error("writing segment", path, io::Error::from_raw_os_error(122));
    assert!(matches!(edquot, SpoolError::DiskFull { .. }), "{edquot:?}");
    let eio = io_error("writing segment", path, io::Error::from_raw_os_error(5));
    assert!(matches!(eio, SpoolError::Io { .. }), "{eio:?}");
}

/// Offset of the record with `seq` in a segment that holds the records
/// `payload(base)`, `payload(base + 1)`, ... back to back.
fn record_offset(base: u64, seq: u64) -> u64 {
    (base..seq)
        .map(|i| RECORD_HEADER_BYTES + payload(i).len() as u64)
        .sum()
}

/// Bit rot in the last segment sets the damaged record aside on recovery; its
/// seq may already have been forwarded, so new batches must get numbers above
/// all of them, not above what is still intact.
#[tokio::test]
async fn corrupt_record_in_the_last_segment_never_lets_its_seqs_be_reused() {
    // (seq_block, which record of the last segment to damage): its first
    // record (only the segment name is left to go by) and one in the middle.
    for (block, victim_index) in [(1, 0), (1, 3), (1 << 16, 3)] {
        let tmp = TempDir::new().unwrap();
        let cfg = with_seq_block(config(tmp.path(), 1 << 20, 512), block);
        let spool = Spool::open(cfg.clone()).unwrap();
        let handed_out = append_all(&spool, 0..30).await;
        drop(spool);
        assert_eq!(handed_out, (0..30).collect::<Vec<_>>());
        let bases = segment_bases(tmp.path());
        let last = *bases.last().unwrap();
        assert!(
            bases.len() >= 3 && 30 - last >= 6,
            "test needs several segments and a long last one: {bases:?}"
        );
        let victim = last + victim_index;
        flip_byte(
            &segment_path(tmp.path(), last),
            record_offset(last, victim) + RECORD_HEADER_BYTES + 3,
        );

        let spool = Spool::open(cfg.clone()).unwrap();
        // Recovery sets the damaged record aside and keeps the rest...
        assert_eq!(
            seqs(&all_pending(&spool)),
            (0..30).filter(|&s| s != victim).collect::<Vec<_>>(),
            "block {block}, victim {victim}"
        );
        assert_eq!(spool.corrupt_records()[0].seq, Some(victim));
        // ...and continues above every seq it ever handed out.
        let max_before = *handed_out.iter().max().unwrap();
        let new_seq = spool.append(payload(100)).await.unwrap();
        assert!(
            new_seq > max_before,
            "block {block}, victim {victim}: got seq {new_seq} again, earlier batches used up \
             to {max_before}"
        );
        // Exactly the stored limit: the rest of the block is skipped, no more.
        assert_eq!(new_seq, if block == 1 { 30 } else { block });
        drop(spool);

        let spool = Spool::open(cfg).unwrap();
        let pending = all_pending(&spool);
        assert_eq!(pending.last().map(|b| b.seq), Some(new_seq));
        assert_eq!(pending.last().unwrap().payload, payload(100));
        assert!(spool.append(payload(101)).await.unwrap() > new_seq);
    }
}

#[tokio::test]
async fn reservation_survives_many_reopens_and_seqs_keep_increasing() {
    const BLOCK: u64 = 8;
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let cfg = with_seq_block(config(dir, 1 << 20, 1 << 10), BLOCK);
    let mut all = Vec::new();
    let mut skipped = 0;
    for cycle in 0..25u64 {
        let spool = Spool::open(cfg.clone()).unwrap();
        let start = spool.stats().next_seq;
        // The stored limit, not the last used seq + 1, is where a run starts.
        assert_eq!(start, stored_seq_limit(dir).unwrap_or(0), "cycle {cycle}");
        if let Some(&prev) = all.last() {
            assert!(start > prev, "cycle {cycle}: start {start} <= {prev}");
            skipped += start - prev - 1;
        }
        // 0..=10 batches per run: none, less than, exactly and more than a block.
        let n = cycle % 11;
        let got = append_all(&spool, 0..n).await;
        assert_eq!(got, (start..start + n).collect::<Vec<_>>(), "cycle {cycle}");
        // One reservation per block used, not one per batch.
        assert_eq!(seq_reservations(&spool), n.div_ceil(BLOCK), "cycle {cycle}");
        assert_eq!(
            stored_seq_limit(dir),
            Some(start + BLOCK * n.div_ceil(BLOCK)).filter(|_| n > 0 || cycle > 0),
            "cycle {cycle}"
        );
        // Every other run acks everything, so whole segments go away and
        // only the reservation (and the active segment's name) remain.
        if cycle % 2 == 1 {
            for &seq in &got {
                spool.ack(seq).unwrap();
            }
        }
        all.extend(got);
    }
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "seqs not strictly increasing: {all:?}"
    );
    assert_eq!(all.len(), (0..25u64).map(|c| c % 11).sum::<u64>() as usize);
    assert!(skipped > 0, "no run ever skipped the rest of a block");
}

/// The hot path: with the default block, one reservation (two fsyncs)
/// covers every append until 65536 seqs are used, however they are grouped.
#[tokio::test]
async fn default_block_reserves_once_for_many_concurrent_appends() {
    let tmp = TempDir::new().unwrap();
    let cfg = SpoolConfig::new(tmp.path());
    let spool = Spool::open(cfg.clone()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            append_all(&spool, t * 100..t * 100 + 50).await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (0..400).collect::<Vec<_>>());
    assert_eq!(seq_reservations(&spool), 1);
    assert_eq!(stored_seq_limit(tmp.path()), Some(1 << 16));
    drop(spool);

    let spool = Spool::open(cfg).unwrap();
    assert_eq!(spool.stats().next_seq, 1 << 16);
    assert_eq!(spool.append(payload(0)).await.unwrap(), 1 << 16);
    assert_eq!(seq_reservations(&spool), 1);
    assert_eq!(stored_seq_limit(tmp.path()), Some(2 << 16));
}

/// A damaged reservation file means the spool no longer knows which seqs it
/// used; it must refuse to open, loudly, and leave the file for inspection.
#[tokio::test]
async fn damaged_reservation_file_refuses_open_until_restored_or_removed() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let cfg = with_seq_block(config(dir, 1 << 20, 1 << 16), 100);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        assert_eq!(append_all(&spool, 0..5).await, vec![0, 1, 2, 3, 4]);
    }
    let path = reservation_path(dir);
    let good = fs::read(&path).unwrap();
    assert_eq!(good, encode_seq_limit(100));
    let flipped = |i: usize| {
        let mut b = good.clone();
        b[i] ^= 0x40;
        b
    };
    let damaged: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bit flip in the limit", flipped(5), "checksum mismatch"),
        ("bit flip in the checksum", flipped(13), "checksum mismatch"),
        ("bit flip in the magic", flipped(0), "bad magic"),
        ("cut short", good[..7].to_vec(), "7 bytes long"),
        ("empty", Vec::new(), "0 bytes long"),
        ("too long", [&good[..], &[0u8; 4]].concat(), "20 bytes long"),
    ];
    let segment = segment_path(dir, 0);
    let segment_before = fs::read(&segment).unwrap();
    for (what, bytes, reason_part) in damaged {
        fs::write(&path, &bytes).unwrap();
        let err = match Spool::open(cfg.clone()) {
            Err(e) => e,
            Ok(spool) => panic!("{what}: opened anyway, next seq {}", spool.stats().next_seq),
        };
        let SpoolError::CorruptSeqReservation {
            path: err_path,
            reason,
        } = &err
        else {
            panic!("{what}: expected CorruptSeqReservation, got {err:?}");
        };
        assert_eq!(err_path, &path, "{what}");
        assert!(reason.contains(reason_part), "{what}: {reason}");
        assert!(!err.is_retryable(), "{what}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        assert!(msg.contains("edge_id"), "{what}: {msg}");
        // Refused before touching anything.
        assert_eq!(fs::read(&path).unwrap(), bytes, "{what}");
        assert_eq!(fs::read(&segment).unwrap(), segment_before, "{what}");
    }

    // Restored from a backup: back to normal.
    fs::write(&path, &good).unwrap();
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        assert_eq!(spool.stats().next_seq, 100);
        assert_eq!(seqs(&all_pending(&spool)), vec![0, 1, 2, 3, 4]);
    }

    // Removed, as the error suggests (and like a spool of an older version):
    // the segments decide again, and the first append writes a new file.
    fs::remove_file(&path).unwrap();
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(spool.stats().next_seq, 5);
    assert_eq!(stored_seq_limit(dir), None);
    assert_eq!(spool.append(payload(5)).await.unwrap(), 5);
    assert_eq!(stored_seq_limit(dir), Some(105));
}

#[tokio::test]
async fn leftover_reservation_tmp_file_is_ignored_and_removed() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let cfg = with_seq_block(config(dir, 1 << 20, 1 << 16), 10);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        append_all(&spool, 0..3).await;
    }
    // A crash between writing the new content and the rename leaves this;
    // its limit was never in force, so it must not count in either direction.
    let tmp_path = dir.join(SEQ_RESERVATION_TMP);
    fs::write(&tmp_path, encode_seq_limit(5_000)).unwrap();
    let spool = Spool::open(cfg.clone()).unwrap();
    assert!(!tmp_path.exists());
    assert_eq!(spool.stats().next_seq, 10);
    assert_eq!(spool.append(payload(3)).await.unwrap(), 10);
    drop(spool);
    fs::write(&tmp_path, b"garbage").unwrap();
    let spool = Spool::open(cfg).unwrap();
    assert!(!tmp_path.exists());
    assert_eq!(spool.stats().next_seq, 20);
}

#[tokio::test]
async fn failed_reservation_write_rejects_the_appends_and_burns_no_seq() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let cfg = with_seq_block(config(dir, 1 << 20, 1 << 16), 4);
    let spool = Spool::open(cfg.clone()).unwrap();
    assert_eq!(append_all(&spool, 0..4).await, vec![0, 1, 2, 3]);
    assert_eq!(stored_seq_limit(dir), Some(4));
    let before = spool.stats();

    spool
        .inner
        .shared
        .fail_next_seq_reservation
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = spool.append(payload(100)).await.unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err:?}");
    assert!(err.is_retryable());
    let after = spool.stats();
    assert_eq!(after.next_seq, 4, "nothing was written, no seq burned");
    assert_eq!(after.used_bytes, before.used_bytes);
    assert_eq!(after.pending_batches, 4);
    assert_eq!(stored_seq_limit(dir), Some(4));

    assert_eq!(spool.append(payload(4)).await.unwrap(), 4);
    assert_eq!(stored_seq_limit(dir), Some(8));
    // No segment roll either: the active file saw no failed write.
    assert_eq!(segment_bases(dir), vec![0]);
    drop(spool);
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(seqs(&all_pending(&spool)), vec![0, 1, 2, 3, 4]);
    assert_eq!(spool.stats().next_seq, 8);
}

const CRASH_DIR_ENV: &str = "WEIR_SPOOL_CRASH_DIR";
const CRASH_ROUND_ENV: &str = "WEIR_SPOOL_CRASH_ROUND";
const CRASH_AFTER: usize = 300;
const CRASH_TASKS: u64 = 8;

fn crash_payload(round: u64, task: u64, i: u64) -> Bytes {
    // 1..~20 KiB so writes are large enough to be cut mid-record.
    let len = 1 + ((round * 7919 + task * 104_729 + i * 1_299_709) % 20_000) as usize;
    let mut p = format!("r{round} t{task} i{i} ").into_bytes();
    p.resize(len.max(p.len()), b'a' + (i % 26) as u8);
    Bytes::from(p)
}

/// A small block so a crash can land while the reservation is replaced and
/// each round starts with a skip to the stored limit.
fn crash_config(dir: &Path) -> SpoolConfig {
    with_seq_block(config(dir, 256 << 20, 256 << 10), 16)
}

/// Child side: appends from several tasks, prints each append that returned
/// Ok, and aborts (no unwinding, no destructors, like kill -9) while the
/// other tasks still have appends in flight.
fn crash_child(dir: &Path, round: u64) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = Spool::open(crash_config(dir)).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for task in 0..CRASH_TASKS {
            let spool = spool.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let seq = spool.append(crash_payload(round, task, i)).await.unwrap();
                    // Printed only after append returned: the parent checks
                    // each printed line against the reopened spool.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "appended {seq} {round} {task} {i}").unwrap();
                    out.flush().unwrap();
                    drop(out);
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == CRASH_AFTER {
                        std::process::abort();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    unreachable!("the crash child aborts once it has {CRASH_AFTER} appends");
}

/// The fsync-before-ack guarantee across a real process crash: a child
/// process (this test binary, re-run with an env var) appends concurrently
/// and aborts mid-stream; every append that returned Ok must come back.
/// Three rounds on the same directory also cover recovering a spool that
/// was itself recovered from a crash.
#[test]
fn kill9_mid_stream_keeps_every_append_that_returned_ok() {
    if let Ok(dir) = std::env::var(CRASH_DIR_ENV) {
        let round = std::env::var(CRASH_ROUND_ENV).unwrap().parse().unwrap();
        crash_child(Path::new(&dir), round);
    }
    use std::os::unix::process::ExitStatusExt;

    let tmp = TempDir::new().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut all_acked: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut max_seq_seen = 0;
    for round in 0..3u64 {
        let max_before_round = all_acked.keys().next_back().copied();
        let out = Command::new(&exe)
            .args([
                "spool::tests::kill9_mid_stream_keeps_every_append_that_returned_ok",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, tmp.path())
            .env(CRASH_ROUND_ENV, round.to_string())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(6),
            "child must die by SIGABRT; status {:?}, stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut acked_this_round = 0;
        for line in stdout.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            // A line cut by the abort is not a completed report; skip it.
            let [_, seq, r, task, i] = f[..] else {
                continue;
            };
            if f[0] != "appended" {
                continue;
            }
            let (Ok(seq), Ok(r), Ok(task), Ok(i)) =
                (seq.parse::<u64>(), r.parse(), task.parse(), i.parse())
            else {
                continue;
            };
            assert_eq!(r, round);
            assert!(
                max_before_round.is_none_or(|m| seq > m),
                "round {round}: seq {seq} not above the earlier rounds' {max_before_round:?}"
            );
            let prev = all_acked.insert(seq, crash_payload(r, task, i));
            assert!(prev.is_none(), "seq {seq} was handed out twice");
            acked_this_round += 1;
            max_seq_seen = max_seq_seen.max(seq);
        }
        assert!(
            acked_this_round >= CRASH_AFTER - CRASH_TASKS as usize,
            "round {round}: only {acked_this_round} appends reported"
        );

        let spool = Spool::open(crash_config(tmp.path())).unwrap();
        let pending: BTreeMap<u64, Bytes> = all_pending(&spool)
            .into_iter()
            .map(|b| (b.seq, b.payload))
            .collect();
        for (seq, payload) in &all_acked {
            match pending.get(seq) {
                Some(p) => assert!(p == payload, "round {round}: seq {seq} has another payload"),
                None => panic!("round {round}: seq {seq} returned Ok but is lost"),
            }
        }
        // Extra pending batches are appends that were durable but whose Ok
        // was not printed before the abort; each must still be intact.
        for (seq, p) in &pending {
            if !all_acked.contains_key(seq) {
                let head = String::from_utf8_lossy(&p[..p.len().min(40)]).into_owned();
                assert!(head.starts_with(&format!("r{round} ")), "seq {seq}: {head}");
            }
        }
        assert!(spool.stats().next_seq > max_seq_seen);
        assert!(!tmp.path().join(SEQ_RESERVATION_TMP).exists());
        // Adopt the unreported-but-durable ones too, so later rounds check them.
        for (seq, p) in pending {
            all_acked.entry(seq).or_insert(p);
        }
    }
}

#[tokio::test]
async fn incarnation_is_random_hex_stable_across_reopens_and_new_after_a_wipe() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 1 << 16);
    let spool = Spool::open(cfg.clone()).unwrap();
    let first = spool.incarnation().to_owned();
    assert_eq!(first.len(), 32, "{first}");
    assert!(
        first
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{first}"
    );
    assert_eq!(spool.append(payload(0)).await.unwrap(), 0);
    drop(spool);

    let spool = Spool::open(cfg.clone()).unwrap();
    assert_eq!(spool.incarnation(), first, "reopen keeps the id");
    drop(spool);

    // A wiped spool starts its seqs at 0 again; only a new incarnation keeps
    // (edge_id, incarnation, seq) from repeating.
    fs::remove_dir_all(tmp.path()).unwrap();
    let spool = Spool::open(cfg.clone()).unwrap();
    assert_eq!(spool.append(payload(0)).await.unwrap(), 0);
    assert_ne!(
        spool.incarnation(),
        first,
        "a wiped spool must get a new id"
    );
    drop(spool);

    // Another spool dir (a replaced disk) has its own.
    let other = TempDir::new().unwrap();
    let spool2 = Spool::open(config(other.path(), 1 << 20, 1 << 16)).unwrap();
    let spool = Spool::open(cfg).unwrap();
    assert_ne!(spool2.incarnation(), spool.incarnation());
}

#[tokio::test]
async fn damaged_incarnation_file_refuses_open_and_leaves_the_file() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("flipped id byte", |p| flip_byte(p, 9)),
        ("flipped magic", |p| flip_byte(p, 0)),
        ("truncated", |p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(10)
                .unwrap()
        }),
        ("empty", |p| fs::write(p, b"").unwrap()),
    ];
    for (what, damage) in damages {
        let tmp = TempDir::new().unwrap();
        let cfg = config(tmp.path(), 1 << 20, 1 << 16);
        let spool = Spool::open(cfg.clone()).unwrap();
        spool.append(payload(0)).await.unwrap();
        drop(spool);
        let path = tmp.path().join(INCARNATION_FILE);
        damage(&path);
        let before = fs::read(&path).unwrap();
        let err = Spool::open(cfg.clone())
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert!(
            matches!(err, SpoolError::CorruptIncarnation { .. }),
            "{what}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("delete it"),
            "{what}: {msg}"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            before,
            "{what}: the file is left for inspection"
        );

        // Deleting it, as the message says, opens with a fresh id and the batch intact.
        fs::remove_file(&path).unwrap();
        let spool = Spool::open(cfg).unwrap();
        assert_eq!(spool.incarnation().len(), 32);
        assert_eq!(seqs(&all_pending(&spool)), vec![0], "{what}");
    }
}

#[tokio::test]
async fn leftover_incarnation_tmp_is_removed_and_a_whole_file_created() {
    let tmp = TempDir::new().unwrap();
    // A crash between writing the tmp file and the rename, on the first open.
    fs::write(tmp.path().join(INCARNATION_TMP), b"half").unwrap();
    let spool = Spool::open(config(tmp.path(), 1 << 20, 1 << 16)).unwrap();
    assert!(!tmp.path().join(INCARNATION_TMP).exists());
    assert_eq!(
        read_incarnation(tmp.path()).unwrap().as_deref(),
        Some(spool.incarnation())
    );
}

/// What the writer did, in order, as seen through the [`Syncer`] seam, plus the
/// moments appends returned to their callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Write(u64),
    SyncData,
    SyncDir,
    Returned(u64),
}

/// Records every write and sync into `log`, then does the real sync. Syncs are slowed
/// down so an append that returned before its sync would be recorded before it.
struct RecordingSyncer {
    log: Arc<Mutex<Vec<Event>>>,
}

impl Syncer for RecordingSyncer {
    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(2));
        file.sync_data()?;
        self.log.lock().unwrap().push(Event::SyncData);
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(2));
        File::open(dir)?.sync_all()?;
        self.log.lock().unwrap().push(Event::SyncDir);
        Ok(())
    }

    fn before_write(&mut self, mut buf: &[u8]) {
        let mut log = self.log.lock().unwrap();
        while !buf.is_empty() {
            let mut raw = [0u8; RECORD_HEADER_BYTES as usize];
            raw.copy_from_slice(&buf[..RECORD_HEADER_BYTES as usize]);
            let h = decode_header(&raw);
            log.push(Event::Write(h.seq));
            buf = &buf[RECORD_HEADER_BYTES as usize + h.len as usize..];
        }
    }
}

/// Point 12 of the ingest hardening: fsync before ack is not just a comment. Every
/// append must return only after a data sync that came after its record was written,
/// and, when its record started a new segment file, after a directory sync as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_append_returns_before_the_sync_that_covers_its_record() {
    let tmp = TempDir::new().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    // Small segments so several group commits roll to new files.
    let cfg = config(tmp.path(), 1 << 20, 1024);
    let spool =
        Spool::open_with_syncer(cfg, Box::new(RecordingSyncer { log: log.clone() })).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (spool, log) = (spool.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let seq = spool.append(payload(t * 100 + i)).await.unwrap();
                log.lock().unwrap().push(Event::Returned(seq));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let bases: BTreeSet<u64> = segment_bases(tmp.path()).into_iter().collect();
    assert!(bases.len() >= 3, "test must roll segments: {bases:?}");
    let log = log.lock().unwrap().clone();
    let returned: Vec<(usize, u64)> = log
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Event::Returned(seq) => Some((i, *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(returned.len(), 120);
    for (at, seq) in returned {
        let written = log
            .iter()
            .position(|e| *e == Event::Write(seq))
            .unwrap_or_else(|| panic!("seq {seq} returned but its record was never written"));
        let between = &log[written..at];
        assert!(
            between.contains(&Event::SyncData),
            "append of seq {seq} returned before any data sync after its write: {between:?}"
        );
        // The first segment is created by `open`, before any append.
        if bases.contains(&seq) && seq != 0 {
            assert!(
                between.contains(&Event::SyncDir),
                "seq {seq} started a segment file but returned before the directory sync: \
                 {between:?}"
            );
        }
    }
}

fn segment_bytes_of(records: &[(u64, &[u8])]) -> Vec<u8> {
    let mut buf = Vec::new();
    for (seq, payload) in records {
        encode_record(&mut buf, *seq, payload);
    }
    buf
}

#[test]
fn scan_finds_the_next_intact_record_after_any_damage() {
    let records: Vec<(u64, Vec<u8>)> = (10..20).map(|s| (s, payload(s).to_vec())).collect();
    let refs: Vec<(u64, &[u8])> = records.iter().map(|(s, p)| (*s, p.as_slice())).collect();
    let clean = segment_bytes_of(&refs);
    let off = |seq: u64| -> usize {
        refs.iter()
            .take_while(|(s, _)| *s < seq)
            .map(|(_, p)| 20 + p.len())
            .sum()
    };
    let intact = |scan: &SegmentScan| scan.records.iter().map(|r| r.seq).collect::<Vec<_>>();
    let all_but = |skip: &[u64]| (10..20).filter(|s| !skip.contains(s)).collect::<Vec<_>>();

    // (what, damage, records expected intact, corrupt regions (offset, len, seq))
    type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    type Regions = Vec<(usize, usize, Option<u64>)>;
    let cases: Vec<(&str, Damage<'_>, Vec<u64>, Regions)> = vec![
        (
            "payload byte",
            Box::new(|d| d[off(13) + 25] ^= 1),
            all_but(&[13]),
            vec![(off(13), off(14) - off(13), Some(13))],
        ),
        (
            "magic byte",
            Box::new(|d| d[off(13)] ^= 1),
            all_but(&[13]),
            vec![(off(13), off(14) - off(13), None)],
        ),
        // A wrong length makes the record's extent unknown: region up to the next intact one.
        (
            "length",
            Box::new(|d| d[off(13) + 4] ^= 0x10),
            all_but(&[13]),
            vec![(off(13), off(14) - off(13), None)],
        ),
        (
            "two neighbours",
            Box::new(|d| {
                d[off(13) + 25] ^= 1;
                d[off(14) + 25] ^= 1
            }),
            all_but(&[13, 14]),
            vec![
                (off(13), off(14) - off(13), Some(13)),
                (off(14), off(15) - off(14), Some(14)),
            ],
        ),
        (
            "a run of zeros across two records",
            Box::new(|d| d[off(13) + 5..off(14) + 9].fill(0)),
            all_but(&[13, 14]),
            vec![(off(13), off(15) - off(13), None)],
        ),
        (
            "first record",
            Box::new(|d| d[25] ^= 1),
            all_but(&[10]),
            vec![(0, off(11), Some(10))],
        ),
        (
            "bytes inserted",
            Box::new(|d| {
                let at = off(16);
                d.splice(at..at, [7u8; 13]);
            }),
            all_but(&[]),
            vec![(off(16), 13, None)],
        ),
    ];
    for (what, damage, want_intact, want_corrupt) in cases {
        let mut data = clean.clone();
        damage(&mut data);
        // Not the last segment, and the last one: same answer in the middle.
        for next_base in [Some(100), None] {
            let scan = scan_segment_bytes(&data, 10, next_base, Some(20));
            assert_eq!(intact(&scan), want_intact, "{what}");
            let got: Vec<_> = scan
                .corrupt
                .iter()
                .map(|c| (c.offset as usize, c.len as usize, c.seq))
                .collect();
            assert_eq!(got, want_corrupt, "{what}, next_base {next_base:?}");
            assert_eq!(scan.torn_tail, None, "{what}");
        }
    }
}

#[test]
fn scan_tells_a_torn_tail_from_a_corrupt_one_by_segment() {
    let clean = segment_bytes_of(&[(0, b"first"), (1, b"second"), (2, b"third")]);
    let third = clean.len() - 25;
    // Cut mid-payload: torn in the last segment, where a crash mid-write leaves
    // it; corrupt in an older one, which was fsynced whole before the next began.
    let cut = &clean[..clean.len() - 2];
    let last = scan_segment_bytes(cut, 0, None, Some(3));
    assert_eq!(last.records.len(), 2);
    assert!(last.corrupt.is_empty());
    assert_eq!(
        last.torn_tail,
        Some(TornTail {
            offset: third as u64,
            len: 23,
            reason: "torn record payload"
        })
    );
    assert_eq!(last.kept_len(cut.len() as u64), third as u64);
    let older = scan_segment_bytes(cut, 0, Some(3), Some(3));
    assert_eq!(older.torn_tail, None);
    assert_eq!(
        older.corrupt,
        vec![CorruptRegion {
            offset: third as u64,
            len: 23,
            seq: None,
            reason: "torn record payload"
        }]
    );

    // Zeros after the last record: torn (never a record), in the last segment.
    let mut zeros = clean.clone();
    zeros.extend([0u8; 64]);
    let scan = scan_segment_bytes(&zeros, 0, None, Some(3));
    assert_eq!((scan.records.len(), scan.corrupt.len()), (3, 0));
    assert_eq!(
        scan.torn_tail.map(|t| (t.offset, t.len)),
        Some((clean.len() as u64, 64))
    );

    // A whole last record with a bad checksum: corrupt, its seq trusted only
    // below the reservation.
    let mut rot = clean.clone();
    rot[third + 21] ^= 1;
    let scan = scan_segment_bytes(&rot, 0, None, Some(3));
    assert_eq!(
        scan.corrupt,
        vec![CorruptRegion {
            offset: third as u64,
            len: 25,
            seq: Some(2),
            reason: "checksum mismatch"
        }]
    );
    let scan = scan_segment_bytes(&rot, 0, None, Some(2));
    assert_eq!(scan.corrupt[0].seq, None, "seq 2 was never handed out");
    // No reservation file (older spools): only the very next seq is certain.
    assert_eq!(
        scan_segment_bytes(&rot, 0, None, None).corrupt[0].seq,
        Some(2)
    );
}

#[tokio::test]
async fn inspect_reports_records_acks_corruption_and_torn_tails_without_changing_anything() {
    let tmp = TempDir::new().unwrap();
    let cfg = config(tmp.path(), 1 << 20, 512);
    let spool = Spool::open(cfg.clone()).unwrap();
    append_all(&spool, 0..30).await;
    for seq in [1, 2] {
        spool.ack(seq).unwrap();
    }
    let incarnation = spool.incarnation().to_owned();
    drop(spool);
    let bases = segment_bases(tmp.path());
    let (first, last) = (bases[0], *bases.last().unwrap());
    flip_byte(
        &segment_path(tmp.path(), first),
        record_offset(first, 3) + RECORD_HEADER_BYTES + 1,
    );
    let last_path = segment_path(tmp.path(), last);
    OpenOptions::new()
        .append(true)
        .open(&last_path)
        .unwrap()
        .write_all(b"WSP1torn")
        .unwrap();
    let snapshot = |dir: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot(tmp.path());

    let report = inspect(tmp.path()).unwrap();
    assert_eq!(snapshot(tmp.path()), before, "inspect is read-only");
    assert_eq!(report.incarnation.as_deref(), Some(incarnation.as_str()));
    assert_eq!(report.seq_reservation, Some(30));
    assert_eq!(report.segments.len(), bases.len());
    assert_eq!((report.records, report.acked, report.pending), (29, 2, 27));
    assert_eq!(report.corrupt.len(), 1);
    let c = &report.corrupt[0];
    assert_eq!(
        (c.segment, c.offset, c.seq, c.acked),
        (first, record_offset(first, 3), Some(3), false)
    );
    assert_eq!(report.segments.last().unwrap().torn_tail_bytes, 8);
    assert!(!report.is_clean());
    assert!(report.problems.is_empty());
    let json = serde_json::to_string(&report).unwrap();
    assert!(
        json.contains("\"torn_tail_bytes\":8") && json.contains(&incarnation),
        "{json}"
    );

    // A damaged reservation file is a problem inspect names, not an error.
    flip_byte(&reservation_path(tmp.path()), 5);
    let report = inspect(tmp.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].contains("seq-reservation"),
        "{:?}",
        report.problems
    );

    // While the spool is open, the locked variant refuses.
    flip_byte(&reservation_path(tmp.path()), 5);
    let spool = Spool::open(cfg).unwrap();
    assert!(matches!(
        inspect_locked(tmp.path()),
        Err(SpoolError::Locked { .. })
    ));
    drop(spool);
    let report = inspect_locked(tmp.path()).unwrap();
    assert_eq!(
        report.segments.last().unwrap().torn_tail_bytes,
        0,
        "open cut the torn tail"
    );
    assert_eq!(report.corrupt.len(), 1, "corrupt stays until dead-lettered");
}
