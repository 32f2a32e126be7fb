//! Unit tests of the state machine: preconditions, log order, replay, snapshots.

use weir_proto::wire::BatchId;

use crate::*;

fn hash(n: u64) -> String {
    blake3::hash(&n.to_be_bytes()).to_hex().to_string()
}

fn seg(id: &str, partition: u32, start: u64, end: u64) -> SegmentInfo {
    SegmentInfo {
        segment_id: id.into(),
        partition,
        offset_start: start,
        offset_end: end,
        n_events: end.saturating_sub(start),
        repositories: vec!["repo".into()],
        min_ts_ms: 1_000,
        max_ts_ms: 2_000,
        bytes: 4096,
        blake3: hash(start * 1_000 + end),
    }
}

fn claim(id: &str, node: &str, partition: u32, epoch: u64) -> Command {
    Command::new(id, node, Cmd::ClaimPartition { partition, node_id: node.into(), epoch })
}

fn register(id: &str, node: &str, epoch: u64, segment: SegmentInfo) -> Command {
    Command::new(id, node, Cmd::RegisterSegment { epoch, segment, dedup: vec![] })
}

/// A heartbeat of `node` at `at_ms` announcing disk `disk`.
fn heartbeat(id: &str, node: &str, disk: &str, at_ms: u64) -> Command {
    let addresses = Addresses { http: format!("{node}:8080"), quic: Some(format!("{node}:4433")) };
    Command::new(id, node, Cmd::NodeHeartbeat { node_id: node.into(), addresses, zone: "z1".into(), at_ms, digest: true, disk_id: disk.into() })
}

fn add_copy(id: &str, issuer: &str, segment: &SegmentInfo, location: Location) -> Command {
    Command::new(id, issuer, Cmd::AddCopy { segment_id: segment.segment_id.clone(), location, verified_blake3: segment.blake3.clone() })
}

fn everyone(_: &str) -> bool {
    true
}

/// Local disks with `n` copies; 0: the bucket only.
fn rule(n: u32) -> StorageRule {
    match n {
        0 => StorageRule { mode: StorageMode::Bucket, replication_factor: 1, node_timeout_ms: 10_000 },
        n => StorageRule { mode: StorageMode::Local, replication_factor: n, node_timeout_ms: 10_000 },
    }
}

/// Applies commands at offsets 0, 1, ... and returns the outcomes.
fn run(state: &mut State, commands: &[Command]) -> Vec<Outcome> {
    let start = state.next_offset();
    commands.iter().enumerate().map(|(i, c)| state.apply(start + i as u64, c).unwrap()).collect()
}

fn rejection(outcome: &Outcome) -> &Rejection {
    match outcome {
        Outcome::Rejected { reason } => reason,
        Outcome::Applied => panic!("expected a rejection, the command applied"),
    }
}

#[test]
fn two_claims_for_the_same_epoch_the_first_in_the_log_wins() {
    let mut state = State::default();
    let outcomes = run(&mut state, &[claim("c1", "a", 0, 1), claim("c2", "b", 0, 1)]);
    assert_eq!(outcomes[0], Outcome::Applied);
    let reason = rejection(&outcomes[1]);
    assert_eq!(*reason, Rejection::EpochNotNext { partition: 0, epoch: 1, current: 1 });
    assert!(reason.to_string().contains("epoch 1"), "{reason}");
    assert_eq!(state.partition(0), PartitionState { owner: Some("a".into()), epoch: 1, next_offset: 0, log_start: 0, truncated: 0 });
}

#[test]
fn a_claim_must_name_exactly_the_next_epoch() {
    let mut state = State::default();
    let outcomes = run(&mut state, &[claim("c1", "a", 0, 2), claim("c2", "a", 0, 0), claim("c3", "a", 0, 1)]);
    assert!(matches!(rejection(&outcomes[0]), Rejection::EpochNotNext { epoch: 2, current: 0, .. }));
    assert!(matches!(rejection(&outcomes[1]), Rejection::EpochNotNext { epoch: 0, current: 0, .. }));
    assert_eq!(outcomes[2], Outcome::Applied);
}

#[test]
fn a_paused_former_owner_cannot_register_after_a_new_claim() {
    let mut state = State::default();
    let outcomes = run(
        &mut state,
        &[
            claim("c1", "a", 0, 1),
            register("r1", "a", 1, seg("s1", 0, 0, 10)),
            claim("c2", "b", 0, 2),
            // a wakes up and registers what it digested under epoch 1.
            register("r2", "a", 1, seg("s2", 0, 10, 20)),
            // b under its own epoch, but a forging b's epoch is refused too.
            register("r3", "a", 2, seg("s3", 0, 10, 20)),
            register("r4", "b", 2, seg("s4", 0, 10, 20)),
        ],
    );
    assert_eq!(outcomes[1], Outcome::Applied);
    assert_eq!(*rejection(&outcomes[3]), Rejection::StaleEpoch { partition: 0, epoch: 1, current: 2 });
    assert!(matches!(rejection(&outcomes[4]), Rejection::NotOwner { .. }));
    assert_eq!(outcomes[5], Outcome::Applied);
    assert!(state.segment("s2").is_none());
    assert_eq!(state.resume_point(0), 20);
}

#[test]
fn segments_tile_their_partition() {
    // (segment after [0, 10), expected)
    type Expect = fn(&Outcome) -> bool;
    let table: [(&str, SegmentInfo, Expect); 6] = [
        ("contiguous", seg("n", 0, 10, 25), |o| *o == Outcome::Applied),
        ("gap", seg("n", 0, 11, 25), |o| matches!(rejection(o), Rejection::Gap { offset_start: 11, next_offset: 10, .. })),
        ("overlap", seg("n", 0, 9, 25), |o| matches!(rejection(o), Rejection::Overlap { offset_start: 9, next_offset: 10, .. })),
        ("same range again", seg("n", 0, 0, 10), |o| matches!(rejection(o), Rejection::Overlap { .. })),
        ("empty range", seg("n", 0, 10, 10), |o| matches!(rejection(o), Rejection::EmptyRange { .. })),
        ("id taken", seg("s1", 0, 10, 25), |o| matches!(rejection(o), Rejection::SegmentExists { .. })),
    ];
    for (name, segment, expected) in table {
        let mut state = State::default();
        let end = segment.offset_end;
        let outcomes = run(&mut state, &[claim("c", "a", 0, 1), register("r1", "a", 1, seg("s1", 0, 0, 10)), register("r2", "a", 1, segment)]);
        assert!(expected(&outcomes[2]), "{name}: {:?}", outcomes[2]);
        let resume = if outcomes[2] == Outcome::Applied { end } else { 10 };
        assert_eq!(state.resume_point(0), resume, "{name}: the resume point is the end of the last segment");
        let ids: Vec<_> = state.segments(0).iter().map(|s| s.info.segment_id.clone()).collect();
        assert_eq!(ids.len(), if resume == 10 { 1 } else { 2 }, "{name}");
    }
}

#[test]
fn malformed_segments_are_refused() {
    let mut bad_hash = seg("s", 0, 0, 10);
    bad_hash.blake3 = "ABC".into();
    let mut inverted = seg("s", 0, 0, 10);
    inverted.min_ts_ms = 5_000;
    let mut state = State::default();
    let outcomes = run(&mut state, &[claim("c", "a", 0, 1), register("r1", "a", 1, bad_hash), register("r2", "a", 1, inverted)]);
    assert!(matches!(rejection(&outcomes[1]), Rejection::NotAHash { .. }));
    assert!(matches!(rejection(&outcomes[2]), Rejection::InvertedTimeRange { .. }));
}

#[test]
fn a_copy_counts_only_with_the_segments_hash() {
    let mut state = State::default();
    let s = seg("s1", 0, 0, 10);
    let add = |id: &str, location: Location, verified_blake3: String| {
        Command::new(id, "b", Cmd::AddCopy { segment_id: "s1".into(), location, verified_blake3 })
    };
    let outcomes = run(
        &mut state,
        &[
            claim("c", "a", 0, 1),
            register("r", "a", 1, s.clone()),
            heartbeat("h", "b", "disk-b", 1),
            add("x1", Location::node("b", "disk-b"), hash(999)),
            add("x2", Location::node("b", "disk-b"), s.blake3.clone()),
            add("x3", Location::node("b", "disk-b"), s.blake3.clone()),
            Command::new("x4", "b", Cmd::AddCopy { segment_id: "nope".into(), location: Location::node("b", "disk-b"), verified_blake3: s.blake3.clone() }),
        ],
    );
    assert!(matches!(rejection(&outcomes[3]), Rejection::HashMismatch { .. }));
    assert_eq!(outcomes[4], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[5]), Rejection::CopyExists { .. }));
    assert!(matches!(rejection(&outcomes[6]), Rejection::UnknownSegment { .. }));
    assert_eq!(state.segment("s1").unwrap().copies.len(), 1);
}

#[test]
fn a_node_copy_is_recorded_and_removed_by_that_node_on_its_current_disk() {
    let mut state = State::default();
    let s = seg("s1", 0, 0, 10);
    let remove = |id: &str, issuer: &str, location: Location| {
        Command::new(id, issuer, Cmd::RemoveCopy { segment_id: "s1".into(), location, reason: "file missing".into() })
    };
    let outcomes = run(
        &mut state,
        &[
            claim("c", "a", 0, 1),
            register("r", "a", 1, s.clone()),
            heartbeat("ha", "a", "disk-a1", 1),
            // a cannot speak for b, nor for a node Global never heard of.
            add_copy("x1", "a", &s, Location::node("b", "disk-b")),
            add_copy("x2", "ghost", &s, Location::node("ghost", "d")),
            // a's own copy, but on a disk it does not announce.
            add_copy("x3", "a", &s, Location::node("a", "disk-old")),
            add_copy("x4", "a", &s, Location::node("a", "disk-a1")),
            // Only a removes a's copy; a copy not there cannot be removed.
            remove("x5", "b", Location::node("a", "disk-a1")),
            remove("x6", "a", Location::node("a", "disk-zz")),
            // The bucket copy: any node records it (the uploader), and removes it.
            add_copy("x7", "b", &s, Location::Bucket("k".into())),
        ],
    );
    assert!(matches!(rejection(&outcomes[3]), Rejection::CopyOfOtherNode { .. }), "{:?}", outcomes[3]);
    assert!(matches!(rejection(&outcomes[4]), Rejection::UnknownNode { .. }), "{:?}", outcomes[4]);
    assert!(matches!(rejection(&outcomes[5]), Rejection::StaleDisk { .. }), "{:?}", outcomes[5]);
    assert_eq!(outcomes[6], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[7]), Rejection::CopyOfOtherNode { .. }), "{:?}", outcomes[7]);
    assert!(matches!(rejection(&outcomes[8]), Rejection::NoSuchCopy { .. }), "{:?}", outcomes[8]);
    assert_eq!(outcomes[9], Outcome::Applied);
    let rule = &rule(1);
    assert_eq!(state.safe_offset_under(0, &self::rule(0), everyone), 10, "the bucket copy");
    let outcomes = run(&mut state, &[remove("x8", "a", Location::Bucket("k".into()))]);
    assert_eq!(outcomes[0], Outcome::Applied);
    assert_eq!(state.safe_offset_under(0, rule, everyone), 10, "a's copy on its disk");
    assert_eq!(state.safe_offset_under(0, rule, |n| n != "a"), 0, "a dead node's copy does not count");
    // a's disk is wiped: it comes back with a new disk id, and its old copy stops counting.
    run(&mut state, &[heartbeat("ha2", "a", "disk-a2", 2)]);
    assert_eq!(state.safe_offset_under(0, rule, everyone), 0, "a copy on a wiped disk does not count");
    let outcomes = run(&mut state, &[remove("x9", "a", Location::node("a", "disk-a1")), add_copy("x10", "a", &s, Location::node("a", "disk-a2"))]);
    assert!(outcomes.iter().all(|o| *o == Outcome::Applied), "{outcomes:?}");
    assert_eq!(state.segment("s1").unwrap().copies, [Location::node("a", "disk-a2")].into());
    assert_eq!(state.safe_offset_under(0, rule, everyone), 10);
}

#[test]
fn safe_offset_is_the_end_of_the_safe_prefix() {
    let mut state = State::default();
    let mut log = vec![claim("c", "a", 0, 1)];
    for (i, (start, end)) in [(0, 10), (10, 20), (20, 30)].into_iter().enumerate() {
        log.push(register(&format!("r{i}"), "a", 1, seg(&format!("s{i}"), 0, start, end)));
    }
    let copy = |id: &str, segment: &str, location: Location| {
        let blake3 = state_hash(segment);
        let issuer = location.node_id().unwrap_or("a").to_owned();
        Command::new(id, issuer, Cmd::AddCopy { segment_id: segment.into(), location, verified_blake3: blake3 })
    };
    log.push(heartbeat("ha", "a", "da", 1));
    log.push(heartbeat("hb", "b", "db", 1));
    log.push(copy("k1", "s0", Location::node("a", "da")));
    log.push(copy("k2", "s0", Location::node("b", "db")));
    log.push(copy("k3", "s1", Location::node("a", "da")));
    log.push(copy("k4", "s2", Location::Bucket("p0/s2".into())));
    assert!(run(&mut state, &log).iter().all(|o| *o == Outcome::Applied));
    let table = [(0, 0), (1, 30), (2, 10), (3, 0)];
    for (min_node_copies, expected) in table {
        assert_eq!(state.safe_offset_under(0, &rule(min_node_copies), everyone), expected, "min_node_copies {min_node_copies}");
    }
    assert_eq!(state.safe_offset_under(0, &rule(2), |n| n == "a"), 0, "b is dead: s0 has one live copy");
    assert_eq!(state.safe_offset_under(7, &rule(1), everyone), 0, "unknown partition");
}

/// The hash `seg()` gives the segment of that name in `safe_offset_is_the_end_of_the_safe_prefix`.
fn state_hash(segment: &str) -> String {
    let n: u64 = segment[1..].parse().unwrap();
    hash(n * 10 * 1_000 + (n + 1) * 10)
}

#[test]
fn dedup_is_updated_by_registered_segments_only() {
    let batch = |inc: &str, seq| BatchId { edge_id: "edge".into(), incarnation: inc.into(), seq };
    let stored = |inc: &str, whole: Vec<(u64, u64)>| StoredBatches { edge_id: "edge".into(), incarnation: inc.into(), whole, parts: vec![] };
    let mut state = State::default();
    let outcomes = run(
        &mut state,
        &[
            claim("c", "a", 0, 1),
            Command::new("r1", "a", Cmd::RegisterSegment { epoch: 1, segment: seg("s1", 0, 0, 10), dedup: vec![stored("i1", vec![(0, 5)])] }),
            // A refused segment's batches are not stored.
            Command::new("r2", "a", Cmd::RegisterSegment { epoch: 1, segment: seg("s2", 0, 50, 60), dedup: vec![stored("i1", vec![(5, 9)])] }),
            // The same batches again in the next segment (a resend): still stored, once.
            Command::new("r3", "a", Cmd::RegisterSegment { epoch: 1, segment: seg("s3", 0, 10, 20), dedup: vec![stored("i1", vec![(0, 6)])] }),
            Command::new("r4", "a", Cmd::RegisterSegment { epoch: 1, segment: seg("s4", 0, 20, 30), dedup: vec![stored("i2", vec![(0, 0)])] }),
        ],
    );
    assert_eq!(outcomes[1], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[2]), Rejection::Gap { .. }));
    assert_eq!(outcomes[3], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[4]), Rejection::InvalidDedup { .. }), "{:?}", outcomes[4]);
    assert!(state.is_stored(0, &batch("i1", 4), 0, 1));
    assert!(state.is_stored(0, &batch("i1", 5), 0, 1));
    assert!(!state.is_stored(0, &batch("i1", 6), 0, 1), "only in the refused segment");
    assert!(!state.is_stored(0, &batch("i2", 4), 0, 1), "another incarnation is independent");
    assert!(!state.is_stored(1, &batch("i1", 4), 0, 1), "another partition is independent");
    // A new owner after failover sees the same answer: dedup lives in Global.
    run(&mut state, &[claim("c2", "b", 0, 2)]);
    assert!(state.is_stored(0, &batch("i1", 4), 0, 1));
    // Each segment keeps its own parts, for a re-digest of its range.
    assert_eq!(state.segment("s1").unwrap().stored, vec![stored("i1", vec![(0, 5)])]);
    assert_eq!(state.segment("s3").unwrap().stored, vec![stored("i1", vec![(0, 6)])]);
}

#[test]
fn replace_segments_swaps_staged_segments_in_one_step_or_not_at_all() {
    let mut base = State::default();
    let mut log = vec![claim("c", "a", 0, 1), claim("c1", "a", 1, 1), heartbeat("h", "a", "da", 1)];
    for (i, (p, start, end)) in [(0, 0, 10), (0, 10, 20), (0, 20, 30), (1, 0, 5)].into_iter().enumerate() {
        log.push(register(&format!("r{i}"), "a", 1, seg(&format!("s{i}"), p, start, end)));
    }
    assert!(run(&mut base, &log).iter().all(|o| *o == Outcome::Applied));
    let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    type Expect = fn(&Outcome) -> bool;
    let applied: Expect = |o| *o == Outcome::Applied;
    let differ: Expect = |o| matches!(rejection(o), Rejection::RangesDiffer { .. });
    let table: Vec<(&str, Vec<String>, Vec<SegmentInfo>, Expect)> = vec![
        ("merge two into one", ids(&["s0", "s1"]), vec![seg("m", 0, 0, 20)], applied),
        ("split one, two partitions", ids(&["s1", "s3"]), vec![seg("m1", 0, 10, 15), seg("m2", 0, 15, 20), seg("m3", 1, 0, 5)], applied),
        ("non-adjacent olds stay apart", ids(&["s0", "s2"]), vec![seg("m1", 0, 0, 10), seg("m2", 0, 20, 30)], applied),
        ("shorter", ids(&["s0", "s1"]), vec![seg("m", 0, 0, 19)], differ),
        ("longer", ids(&["s0"]), vec![seg("m", 0, 0, 11)], differ),
        ("bridging a gap between olds", ids(&["s0", "s2"]), vec![seg("m", 0, 0, 30)], differ),
        ("new ones overlap", ids(&["s0"]), vec![seg("m1", 0, 0, 6), seg("m2", 0, 4, 10)], differ),
        ("wrong partition", ids(&["s0"]), vec![seg("m", 1, 0, 10)], differ),
        ("unknown old", ids(&["s0", "zz"]), vec![seg("m", 0, 0, 10)], |o| matches!(rejection(o), Rejection::UnknownSegment { .. })),
        ("old twice", ids(&["s0", "s0"]), vec![seg("m", 0, 0, 10)], |o| matches!(rejection(o), Rejection::SegmentRepeated { .. })),
        ("nothing old", ids(&[]), vec![], |o| matches!(rejection(o), Rejection::EmptyReplacement)),
    ];
    for (name, old, new, expected) in table {
        let mut state = base.clone();
        // Staged, each with a copy on a's disk: only then may they replace anything.
        let mut staging = vec![];
        for (i, segment) in new.iter().enumerate() {
            staging.push(Command::new(format!("st{i}"), "a", Cmd::StageSegment { segment: segment.clone(), stored: vec![] }));
            staging.push(add_copy(&format!("cp{i}"), "a", segment, Location::node("a", "da")));
        }
        assert!(run(&mut state, &staging).iter().all(|o| *o == Outcome::Applied), "{name}: staging");
        assert_eq!(state.segments(0).len(), 3, "{name}: a staged segment is not part of its partition");
        let command = Command::new("swap", "x", Cmd::ReplaceSegments { old: old.clone(), new: new.iter().map(|s| s.segment_id.clone()).collect(), at_ms: 0 });
        let outcome = state.apply(100, &command).unwrap();
        assert!(expected(&outcome), "{name}: {outcome:?}");
        if outcome == Outcome::Applied {
            assert!(old.iter().all(|id| state.segment(id).is_none()), "{name}: old ones gone");
            for s in &new {
                let swapped = state.segment(&s.segment_id).expect("new ones in");
                assert!(!swapped.staged && swapped.copies.len() == 1, "{name}: new ones registered with their copies: {swapped:?}");
            }
            check_invariants(&state, name);
            assert_eq!(state.partition(0), base.partition(0), "{name}: the resume point does not move");
        } else {
            assert_eq!(state.segments(0).len(), 3, "{name}: nothing swapped");
            assert_eq!(state.segments(1).len(), 1, "{name}: nothing swapped");
        }
    }
}

#[test]
fn a_replacement_is_fenced_by_staging_with_a_copy_and_by_its_old_segments() {
    let mut state = State::default();
    let (s0, m, n) = (seg("s0", 0, 0, 10), seg("m", 0, 0, 10), seg("n", 0, 0, 10));
    let stage = |id: &str, segment: &SegmentInfo| Command::new(id, "a", Cmd::StageSegment { segment: segment.clone(), stored: vec![] });
    let replace = |id: &str, old: &str, new: &str| Command::new(id, "a", Cmd::ReplaceSegments { old: vec![old.into()], new: vec![new.into()], at_ms: 0 });
    let outcomes = run(
        &mut state,
        &[
            claim("c", "a", 0, 1),
            heartbeat("h", "a", "da", 1),
            register("r", "a", 1, s0.clone()),
            add_copy("k0", "a", &s0, Location::node("a", "da")),
            // Not staged: a registered id, or none at all.
            replace("x1", "s0", "s0"),
            replace("x2", "s0", "zz"),
            stage("st-m", &m),
            // Staged, but no copy: swapping it in would leave offsets with no file.
            replace("x3", "s0", "m"),
            add_copy("k1", "a", &m, Location::node("a", "da")),
            // A staged segment cannot be the old side.
            Command::new("x4", "a", Cmd::ReplaceSegments { old: vec!["m".into()], new: vec!["m".into()], at_ms: 0 }),
            replace("x5", "s0", "m"),
            // A second reparse that raced the first: its old segment is gone; refused whole.
            stage("st-n", &n),
            add_copy("k2", "a", &n, Location::node("a", "da")),
            replace("x6", "s0", "n"),
            Command::new("x7", "a", Cmd::DropStaged { segment_id: "n".into() }),
            Command::new("x8", "a", Cmd::DropStaged { segment_id: "m".into() }),
        ],
    );
    assert!(matches!(rejection(&outcomes[4]), Rejection::NotStaged { .. }), "{:?}", outcomes[4]);
    assert!(matches!(rejection(&outcomes[5]), Rejection::UnknownSegment { .. }), "{:?}", outcomes[5]);
    assert!(matches!(rejection(&outcomes[7]), Rejection::NoCopy { .. }), "{:?}", outcomes[7]);
    assert!(matches!(rejection(&outcomes[9]), Rejection::StagedNotRegistered { .. } | Rejection::SegmentRepeated { .. }), "{:?}", outcomes[9]);
    assert_eq!(outcomes[10], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[13]), Rejection::UnknownSegment { .. }), "{:?}", outcomes[13]);
    assert_eq!(outcomes[14], Outcome::Applied, "the loser drops its staged segment");
    assert!(matches!(rejection(&outcomes[15]), Rejection::NotStaged { .. }), "a swapped-in segment is not dropped this way");
    assert!(state.segment("n").is_none());
    assert_eq!(state.segments(0).iter().map(|s| s.info.segment_id.as_str()).collect::<Vec<_>>(), ["m"]);
    assert_eq!(state.safe_offset_under(0, &rule(1), everyone), 10, "the range stays as safe as it was");
}

#[test]
fn version_1_records_replay_in_todays_shapes() {
    let records = [
        r#"{"v":1,"id":"h","node":"a","cmd":{"type":"node_heartbeat","node_id":"a","addresses":["a:8080","a:4433"],"zone":"z","at_ms":5}}"#,
        r#"{"v":1,"id":"c","node":"a","cmd":{"type":"claim_partition","partition":0,"node_id":"a","epoch":1}}"#,
        &format!(
            r#"{{"v":1,"id":"r","node":"a","cmd":{{"type":"register_segment","epoch":1,"segment":{},"dedup":[{{"edge_id":"e","incarnation":"i","whole":[[0,3]]}}]}}}}"#,
            serde_json::to_string(&seg("s0", 0, 0, 10)).unwrap()
        ),
        // Self-declared, without a disk: recorded (it says where a file is), never safe.
        &format!(r#"{{"v":1,"id":"k","node":"b","cmd":{{"type":"add_copy","segment_id":"s0","location":{{"node":"a"}},"verified_blake3":"{}"}}}}"#, seg("s0", 0, 0, 10).blake3),
        &format!(
            r#"{{"v":1,"id":"x","node":"b","cmd":{{"type":"replace_segments","old":["s0"],"new":[{}]}}}}"#,
            serde_json::to_string(&seg("m", 0, 0, 10)).unwrap()
        ),
    ];
    let mut state = State::default();
    for (offset, record) in records.iter().enumerate() {
        let outcome = state.apply_record(offset as u64, record.as_bytes()).unwrap();
        assert_eq!(outcome, Outcome::Applied, "record {offset}: {record}");
    }
    let a = &state.nodes()["a"];
    assert_eq!(a.addresses, Addresses { http: "a:8080".into(), quic: Some("a:4433".into()) });
    assert_eq!(a.disk_id, "", "version 1 knew no disks");
    let m = state.segment("m").unwrap();
    assert!(m.copies.is_empty() && !m.staged, "{m:?}");
    assert_eq!(m.stored.len(), 1, "the parts of the replaced segment stay with its range");
    // A version 2 heartbeat without a disk id is refused; one of version 3 stops the node.
    let mut no_disk = heartbeat("h2", "a", "", 6);
    assert!(matches!(rejection(&state.apply(10, &no_disk).unwrap()), Rejection::NoDiskId { .. }));
    no_disk.v = 3;
    assert_eq!(state.apply(11, &no_disk), Err(ApplyError::UnsupportedVersion(3)));
}

#[test]
fn a_retry_past_the_remembered_commands_is_refused_but_the_segment_is_held() {
    let mut state = State::default();
    let s = seg("s1", 0, 0, 10);
    run(&mut state, &[claim("c", "a", 0, 1), register("r", "a", 1, s.clone())]);
    let others: Vec<Command> = (0..RECENT_COMMANDS as u64 + 1).map(|i| heartbeat(&format!("h{i}"), "b", "db", i)).collect();
    run(&mut state, &others);
    run(&mut state, &[claim("c2", "b", 0, 2)]);
    let outcome = run(&mut state, &[register("r", "a", 1, s.clone())]).remove(0);
    assert!(matches!(rejection(&outcome), Rejection::StaleEpoch { .. }), "no longer recognised as a retry: {outcome:?}");
    assert!(state.holds(&s), "but Global holds the segment: the writer must keep its file");
    let mut other_bytes = s.clone();
    other_bytes.blake3 = hash(12345);
    assert!(!state.holds(&other_bytes), "the same id with other bytes is not this file");
    assert!(!state.holds(&seg("s2", 0, 10, 20)));
}

#[test]
fn topics_are_bound_once_and_a_log_start_only_moves_forward_and_is_audited() {
    let topics = |id: &str| Topics {
        cluster_id: "cluster".into(),
        ingest_topic: "ingest".into(),
        ingest_topic_id: id.into(),
        global_topic: "global".into(),
        global_topic_id: "g".into(),
    };
    let log_start = |id: &str, offset| {
        Command::new(
            id,
            "ops",
            Cmd::SetLogStart {
                partition: 0,
                offset,
                reason: "retention ran first".into(),
            },
        )
    };
    let mut state = State::default();
    let outcomes = run(
        &mut state,
        &[
            Command::new(
                "b1",
                "a",
                Cmd::BindTopics {
                    topics: topics("i1"),
                },
            ),
            Command::new(
                "b2",
                "b",
                Cmd::BindTopics {
                    topics: topics("i2"),
                },
            ),
            claim("c", "a", 0, 1),
            log_start("l1", 100),
            log_start("l2", 100),
            // The next segment starts at the log start, not at 0.
            register("r0", "a", 1, seg("s0", 0, 0, 50)),
            register("r1", "a", 1, seg("s1", 0, 100, 150)),
            heartbeat("h", "a", "da", 1),
            add_copy(
                "k1",
                "a",
                &seg("s1", 0, 100, 150),
                Location::node("a", "da"),
            ),
        ],
    );
    assert_eq!(
        state.topics(),
        Some(&topics("i1")),
        "the first binding stays"
    );
    assert!(matches!(
        rejection(&outcomes[1]),
        Rejection::TopicsBound { .. }
    ));
    assert_eq!(outcomes[3], Outcome::Applied);
    assert!(matches!(
        rejection(&outcomes[4]),
        Rejection::LogStartNotForward {
            offset: 100,
            current: 100,
            ..
        }
    ));
    assert!(
        matches!(rejection(&outcomes[5]), Rejection::Overlap { .. }),
        "{:?}",
        outcomes[5]
    );
    assert_eq!(outcomes[6], Outcome::Applied);
    assert_eq!(state.partition(0).log_start, 100);
    assert!(
        state
            .log_start_reason(0)
            .is_some_and(|r| r.contains("ops") && r.contains("retention ran first")),
        "{:?}",
        state.log_start_reason(0)
    );
    assert_eq!(
        state.safe_offset_under(0, &rule(1), everyone),
        150,
        "safe from the log start"
    );
}

#[test]
fn a_truncation_needs_the_rule_the_owner_a_safe_offset_and_its_justification_and_never_goes_back() {
    let mut state = State::default();
    let (s0, s1, s2) = (seg("s0", 0, 0, 10), seg("s1", 0, 10, 20), seg("s2", 0, 20, 30));
    let truncate = |id: &str, issuer: &str, epoch, offset, at_ms, segments: &[&str]| {
        let segments = segments.iter().map(|s| s.to_string()).collect();
        Command::new(id, issuer, Cmd::Truncate { partition: 0, epoch, offset, at_ms, segments })
    };
    let mut log = vec![claim("c", "a", 0, 1), heartbeat("ha", "a", "da", 1_000), heartbeat("hb", "b", "db", 1_000)];
    for (i, s) in [&s0, &s1, &s2].into_iter().enumerate() {
        log.push(register(&format!("r{i}"), "a", 1, s.clone()));
    }
    for s in [&s0, &s1] {
        log.push(add_copy(&format!("ka-{}", s.segment_id), "a", s, Location::node("a", "da")));
        log.push(add_copy(&format!("kb-{}", s.segment_id), "b", s, Location::node("b", "db")));
    }
    log.push(add_copy("ka-s2", "a", &s2, Location::node("a", "da")));
    assert!(run(&mut state, &log).iter().all(|o| *o == Outcome::Applied));
    let outcomes = run(
        &mut state,
        &[
            truncate("t0", "a", 1, 20, 2_000, &["s0", "s1"]),
            Command::new("rule", "a", Cmd::SetStorageRule { rule: rule(2) }),
            // Not the owner, a stale epoch, past the safe offset (s2 has one copy), a wrong list.
            truncate("t1", "b", 1, 20, 2_000, &["s0", "s1"]),
            truncate("t2", "a", 0, 20, 2_000, &["s0", "s1"]),
            truncate("t3", "a", 1, 30, 2_000, &["s0", "s1", "s2"]),
            truncate("t4", "a", 1, 20, 2_000, &["s1"]),
            // b's last heartbeat (1 s) is too old at 20 s: its copies do not count then.
            truncate("t5", "a", 1, 20, 20_000, &["s0", "s1"]),
            truncate("t6", "a", 1, 20, 2_000, &["s0", "s1"]),
            truncate("t7", "a", 1, 10, 2_000, &["s0"]),
        ],
    );
    assert!(matches!(rejection(&outcomes[0]), Rejection::NoStorageRule));
    assert_eq!(outcomes[1], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[2]), Rejection::NotOwner { .. }));
    assert!(matches!(rejection(&outcomes[3]), Rejection::StaleEpoch { .. }));
    assert!(matches!(rejection(&outcomes[4]), Rejection::NotSafe { offset: 30, safe: 20, .. }), "{:?}", outcomes[4]);
    assert!(matches!(rejection(&outcomes[5]), Rejection::WrongJustification { .. }));
    assert!(matches!(rejection(&outcomes[6]), Rejection::NotSafe { safe: 0, .. }), "{:?}", outcomes[6]);
    assert_eq!(outcomes[7], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[8]), Rejection::TruncationNotForward { truncated: 20, .. }), "never back");
    assert_eq!(state.partition(0).truncated, 20);
    // b dies: the safe offset does not fall below what was truncated.
    assert_eq!(state.safe_offset(0, |n| n == "a"), 20);
    // A reparse of truncated data must be safe itself: one copy is not enough under rf 2.
    let m = seg("m", 0, 0, 10);
    let staged = run(
        &mut state,
        &[
            Command::new("st", "a", Cmd::StageSegment { segment: m.clone(), stored: vec![] }),
            add_copy("km", "a", &m, Location::node("a", "da")),
            Command::new("x1", "a", Cmd::ReplaceSegments { old: vec!["s0".into()], new: vec!["m".into()], at_ms: 2_000 }),
            add_copy("kmb", "b", &m, Location::node("b", "db")),
            Command::new("x2", "a", Cmd::ReplaceSegments { old: vec!["s0".into()], new: vec!["m".into()], at_ms: 2_000 }),
        ],
    );
    assert!(matches!(rejection(&staged[2]), Rejection::LessSafe { .. }), "{:?}", staged[2]);
    assert_eq!(staged[4], Outcome::Applied);
}

#[test]
fn a_lost_segment_is_superseded_by_its_owner_with_a_staged_copy_of_the_same_range() {
    let mut state = State::default();
    let (s0, s1) = (seg("s0", 0, 0, 10), seg("s1", 0, 10, 20));
    let stored = vec![StoredBatches { edge_id: "e".into(), incarnation: "i".into(), whole: vec![(0, 4)], parts: vec![] }];
    let (good, short) = (seg("r0", 0, 0, 10), seg("r1", 0, 0, 9));
    let supersede = |id: &str, issuer: &str, epoch, old: &str, new: &str| Command::new(id, issuer, Cmd::SupersedeSegment { epoch, old: old.into(), new: new.into() });
    let outcomes = run(
        &mut state,
        &[
            claim("c", "a", 0, 1),
            Command::new("r", "a", Cmd::RegisterSegment { epoch: 1, segment: s0.clone(), dedup: stored.clone() }),
            register("r1", "a", 1, s1.clone()),
            // a died; b took the partition and re-digested s0's range.
            claim("c2", "b", 0, 2),
            heartbeat("hb", "b", "db", 1),
            Command::new("st", "b", Cmd::StageSegment { segment: good.clone(), stored: stored.clone() }),
            Command::new("st1", "b", Cmd::StageSegment { segment: short.clone(), stored: vec![] }),
            supersede("x0", "b", 2, "s0", "r0"),
            add_copy("k0", "b", &good, Location::node("b", "db")),
            add_copy("k1", "b", &short, Location::node("b", "db")),
            supersede("x1", "a", 1, "s0", "r0"),
            supersede("x2", "b", 2, "s0", "r1"),
            supersede("x3", "b", 2, "s0", "r0"),
            supersede("x4", "b", 2, "s0", "r0"),
        ],
    );
    assert!(matches!(rejection(&outcomes[7]), Rejection::NoCopy { .. }), "{:?}", outcomes[7]);
    assert!(matches!(rejection(&outcomes[10]), Rejection::StaleEpoch { .. }), "a former owner is fenced: {:?}", outcomes[10]);
    assert!(matches!(rejection(&outcomes[11]), Rejection::RangesDiffer { .. }), "{:?}", outcomes[11]);
    assert_eq!(outcomes[12], Outcome::Applied);
    assert!(matches!(rejection(&outcomes[13]), Rejection::NotStaged { .. } | Rejection::UnknownSegment { .. }), "once: {:?}", outcomes[13]);
    let ids: Vec<_> = state.segments(0).iter().map(|s| s.info.segment_id.clone()).collect();
    assert_eq!(ids, ["r0", "s1"]);
    assert_eq!(state.segment("r0").unwrap().stored, stored, "the lost segment's parts stay with its range");
    check_invariants(&state, "after supersede");
}

#[test]
fn copies_in_distinct_zones_as_far_as_the_zones_allow() {
    let mut state = State::default();
    let s = seg("s", 0, 0, 10);
    let hb = |node: &str, zone: &str| {
        let addresses = Addresses { http: format!("{node}:1"), quic: None };
        Command::new(format!("h-{node}"), node, Cmd::NodeHeartbeat { node_id: node.into(), addresses, zone: zone.into(), at_ms: 1, digest: true, disk_id: format!("d{node}") })
    };
    let copy = |node: &str| add_copy(&format!("k-{node}"), node, &s, Location::node(node, format!("d{node}")));
    run(&mut state, &[claim("c", "a", 0, 1), register("r", "a", 1, s.clone()), hb("a", "z1"), hb("b", "z1"), hb("c", "z2"), copy("a"), copy("b")]);
    let segment = state.segment("s").unwrap().clone();
    assert!(!state.is_safe(&segment, &rule(2), everyone), "two copies, one zone, while a second zone has a live node");
    assert!(state.is_safe(&segment, &rule(2), |n| n != "c"), "with only z1 live, two nodes of z1 will do");
    run(&mut state, &[copy("c")]);
    let segment = state.segment("s").unwrap().clone();
    assert!(state.is_safe(&segment, &rule(2), everyone));
    assert!(!state.is_safe(&segment, &rule(0), everyone), "bucket mode: node copies never make it safe");
}

#[test]
fn heartbeats_record_nodes_and_never_go_back() {
    let hb = |id: &str, issuer: &str, node: &str, at_ms| {
        let addresses = Addresses { http: "127.0.0.1:9000".into(), quic: None };
        Command::new(id, issuer, Cmd::NodeHeartbeat { node_id: node.into(), addresses, zone: "z1".into(), at_ms, digest: true, disk_id: "d".into() })
    };
    let mut state = State::default();
    let outcomes = run(&mut state, &[hb("h1", "a", "a", 100), hb("h2", "a", "a", 50), hb("h3", "b", "a", 200), hb("h4", "a", "a", 150)]);
    assert!(matches!(rejection(&outcomes[1]), Rejection::StaleHeartbeat { at_ms: 50, stored_ms: 100, .. }));
    assert!(matches!(rejection(&outcomes[2]), Rejection::HeartbeatForOtherNode { .. }));
    assert_eq!(outcomes[3], Outcome::Applied);
    assert_eq!(state.nodes()["a"].heartbeat_ms, 150);
}

#[test]
fn offsets_apply_once_in_order_and_a_retried_command_is_recognised() {
    let mut state = State::default();
    assert_eq!(state.apply(5, &claim("c1", "a", 0, 1)).unwrap(), Outcome::Applied);
    assert_eq!(state.apply(5, &claim("c2", "a", 0, 2)), Err(ApplyError::NotAfter { offset: 5, applied: 5 }));
    assert_eq!(state.apply(4, &claim("c2", "a", 0, 2)), Err(ApplyError::NotAfter { offset: 4, applied: 5 }));
    assert_eq!(state.applied_offset(), Some(5));
    // The same command written twice (a producer retry): the second copy says where the first was.
    let outcome = state.apply(9, &claim("c1", "a", 0, 1)).unwrap();
    assert_eq!(*rejection(&outcome), Rejection::DuplicateCommand { id: "c1".into(), first_offset: 5, first_applied: true });
    assert_eq!(state.applied_offset(), Some(9));
}

#[test]
fn records_of_an_unknown_version_stop_and_malformed_ones_are_skipped() {
    let mut state = State::default();
    let newer = br#"{"v":3,"id":"x","node":"a","cmd":{"type":"something_new"}}"#;
    assert_eq!(state.apply_record(0, newer), Err(ApplyError::UnsupportedVersion(3)));
    assert_eq!(state.applied_offset(), None, "not applied: the node must stop here");
    let outcome = state.apply_record(0, b"{not json").unwrap();
    assert!(matches!(rejection(&outcome), Rejection::Malformed(_)));
    let unknown = br#"{"v":2,"id":"x","node":"a","cmd":{"type":"something_new"}}"#;
    assert!(matches!(rejection(&state.apply_record(1, unknown).unwrap()), Rejection::Malformed(_)));
    assert_eq!(state.apply_record(2, &claim("c", "a", 0, 1).encode()).unwrap(), Outcome::Applied);
    assert_eq!(state.applied_offset(), Some(2));
}

#[test]
fn the_envelope_is_the_documented_json() {
    let json = String::from_utf8(claim("c1", "a", 3, 1).encode()).unwrap();
    assert_eq!(json, r#"{"v":2,"id":"c1","node":"a","cmd":{"type":"claim_partition","partition":3,"node_id":"a","epoch":1}}"#);
    assert_eq!(Command::decode(json.as_bytes()).unwrap(), claim("c1", "a", 3, 1));
}

// ---- replay, snapshots, random logs ----

/// A small deterministic PRNG (xorshift64*): reproducible logs without a new crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A log of plausible and implausible commands from three nodes on three partitions:
/// claims with right and wrong epochs, segments with the right start and off by a little,
/// copies with right and wrong hashes, re-parses, heartbeats.
fn random_log(seed: u64, len: usize) -> Vec<Command> {
    let mut rng = Rng(seed | 1);
    // Writers read Global, then race: most commands are built from the current state, some
    // from a stale or wrong view, as real writers' are.
    let mut shadow = State::default();
    let mut made: Vec<SegmentInfo> = vec![];
    let nodes = ["a", "b", "c"];
    let mut log = vec![];
    for i in 0..len {
        let mut node = nodes[rng.below(3) as usize];
        let p = rng.below(3) as usize;
        let current = shadow.partition(p as u32);
        let id = format!("cmd{i}");
        let cmd = match rng.below(10) {
            0 | 1 => {
                let epoch = current.epoch + [1, 1, 0, 2][rng.below(4) as usize]; // +0 or +2: refused
                Cmd::ClaimPartition { partition: p as u32, node_id: node.into(), epoch }
            }
            2..=5 => {
                let start = match rng.below(6) {
                    0 => current.next_offset.saturating_sub(1),
                    1 => current.next_offset + 1,
                    _ => current.next_offset,
                };
                let end = start + rng.below(20);
                let mut segment = seg(&format!("seg{i}"), p as u32, start, end);
                segment.blake3 = hash(i as u64);
                made.push(segment.clone());
                let inc = format!("i{}", rng.below(2));
                let s = rng.below(50);
                let dedup = vec![StoredBatches { edge_id: "e".into(), incarnation: inc, whole: vec![(s, s + rng.below(5) + 1)], parts: vec![] }];
                if rng.below(5) != 0 {
                    node = current.owner.as_deref().map_or(node, |o| nodes.iter().find(|n| **n == o).unwrap());
                }
                let epoch = if rng.below(5) == 0 { current.epoch.saturating_sub(1) } else { current.epoch };
                Cmd::RegisterSegment { epoch, segment, dedup }
            }
            6 | 7 if !made.is_empty() => {
                let segment = &made[rng.below(made.len() as u64) as usize];
                let verified_blake3 = if rng.below(4) == 0 { hash(u64::MAX) } else { segment.blake3.clone() };
                let disk = if rng.below(4) == 0 { "old" } else { "disk" };
                let location = if rng.below(3) == 0 { Location::Bucket(segment.segment_id.clone()) } else { Location::node(node, format!("{node}-{disk}")) };
                Cmd::AddCopy { segment_id: segment.segment_id.clone(), location, verified_blake3 }
            }
            8 if !made.is_empty() => {
                // Re-parse: stage a new version of one believed segment, or swap staged
                // ones in (refused if not registered, not staged, without a copy, or off).
                let old = made[rng.below(made.len() as u64) as usize].clone();
                if rng.below(2) == 0 {
                    let mut new = seg(&format!("re{i}"), old.partition, old.offset_start, old.offset_end + rng.below(4) / 3);
                    new.blake3 = hash(2 * i as u64);
                    made.push(new.clone());
                    Cmd::StageSegment { segment: new, stored: vec![] }
                } else {
                    let new = made[rng.below(made.len() as u64) as usize].segment_id.clone();
                    Cmd::ReplaceSegments { old: vec![old.segment_id.clone()], new: vec![new], at_ms: 0 }
                }
            }
            9 if !made.is_empty() && rng.below(3) == 0 => {
                let segment = &made[rng.below(made.len() as u64) as usize];
                let location = if rng.below(2) == 0 { Location::Bucket(segment.segment_id.clone()) } else { Location::node(node, format!("{node}-disk")) };
                Cmd::RemoveCopy { segment_id: segment.segment_id.clone(), location, reason: "random".into() }
            }
            _ => {
                let addresses = Addresses { http: format!("{node}:1"), quic: None };
                let disk_id = format!("{node}-{}", if rng.below(8) == 0 { "old" } else { "disk" });
                Cmd::NodeHeartbeat { node_id: node.into(), addresses, zone: "z".into(), at_ms: rng.below(1000), digest: true, disk_id }
            }
        };
        let command = Command::new(id, node, cmd);
        shadow.apply(i as u64, &command).unwrap();
        log.push(command);
    }
    log
}

/// No overlap, no gap, resume point = end of the last segment, index and segments agree.
fn check_invariants(state: &State, context: &str) {
    check_tiling(state, context);
    let indexed: usize = state.partitions().map(|p| state.segments(p).len()).sum();
    let json = serde_json::to_value(state).unwrap();
    let registered = json["segments"].as_object().unwrap().values().filter(|s| s["staged"] == false).count();
    assert_eq!(indexed, registered, "{context}: every registered segment is in its partition's index, no staged one is");
}

fn check_tiling(state: &State, context: &str) {
    for p in state.partitions() {
        let mut next = 0;
        for segment in state.segments(p) {
            assert_eq!(segment.info.partition, p, "{context}");
            assert_eq!(segment.info.offset_start, next, "{context}: partition {p} has a gap or an overlap");
            assert!(segment.info.offset_end > segment.info.offset_start, "{context}");
            next = segment.info.offset_end;
        }
        assert_eq!(state.resume_point(p), next, "{context}: partition {p}'s resume point");
    }
}

fn replay(log: &[Command]) -> State {
    let mut state = State::default();
    run(&mut state, log);
    state
}

#[test]
fn random_logs_keep_the_invariants_and_epochs_never_go_back() {
    for seed in 1..=40u64 {
        let log = random_log(seed, 400);
        let mut state = State::default();
        let (mut applied, mut rejected) = (0, 0);
        for (offset, command) in log.iter().enumerate() {
            let before: Vec<_> = (0..3).map(|p| state.partition(p)).collect();
            match state.apply(offset as u64, command).unwrap() {
                Outcome::Applied => applied += 1,
                Outcome::Rejected { .. } => rejected += 1,
            }
            for p in 0..3u32 {
                let after = state.partition(p);
                assert!(after.epoch >= before[p as usize].epoch, "seed {seed} offset {offset}: epoch of {p} went back");
                assert!(after.next_offset >= before[p as usize].next_offset, "seed {seed} offset {offset}: next offset of {p} went back");
            }
            check_tiling(&state, &format!("seed {seed} offset {offset}"));
        }
        check_invariants(&state, &format!("seed {seed}"));
        assert!(applied > 50 && rejected > 50, "seed {seed}: the log exercises both ({applied} applied, {rejected} rejected)");
    }
}

#[test]
fn two_replays_of_one_log_are_identical() {
    for seed in [3, 17, 99] {
        let log = random_log(seed, 500);
        let (one, two) = (replay(&log), replay(&log));
        assert_eq!(serde_json::to_vec(&one).unwrap(), serde_json::to_vec(&two).unwrap(), "seed {seed}");
        assert_eq!(Snapshot::of(&one).encode(), Snapshot::of(&two).encode(), "seed {seed}");
    }
}

#[test]
fn a_snapshot_at_k_plus_the_rest_of_the_log_equals_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("global.snapshot");
    let log = random_log(7, 300);
    let full = replay(&log);
    for k in [0, 1, 150, 299, 300] {
        Snapshot::of(&replay(&log[..k])).write(&path).unwrap();
        let snapshot = Snapshot::read(&path).unwrap();
        assert_eq!(snapshot.applied_offset, k.checked_sub(1).map(|o| o as u64), "k {k}");
        let mut state = snapshot.state;
        assert_eq!(state.next_offset(), k as u64);
        for (i, command) in log.iter().enumerate().skip(k) {
            state.apply(i as u64, command).unwrap();
        }
        assert_eq!(serde_json::to_vec(&state).unwrap(), serde_json::to_vec(&full).unwrap(), "k {k}");
    }
    assert!(!dir.path().join("global.snapshot.tmp").exists());
}

#[test]
fn a_damaged_snapshot_is_an_error_not_a_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("global.snapshot");
    Snapshot::of(&replay(&random_log(5, 100))).write(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let damaged = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        Snapshot::read(&path).unwrap_err()
    };
    for at in [0, 8, 20, 41, 48, good.len() / 2, good.len() - 1] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        let error = damaged(&bytes);
        assert!(
            matches!(error, SnapshotError::Checksum { .. } | SnapshotError::NotASnapshot { .. } | SnapshotError::Truncated { .. }),
            "flipped byte {at}: {error}"
        );
    }
    for len in [0, 5, 47, 48, good.len() - 1] {
        let error = damaged(&good[..len]);
        assert!(matches!(error, SnapshotError::Truncated { .. } | SnapshotError::NotASnapshot { .. }), "truncated to {len}: {error}");
    }
    assert!(matches!(damaged(&good[..good.len() - 1]), SnapshotError::Truncated { .. }));
    assert!(matches!(Snapshot::read(&dir.path().join("missing")), Err(SnapshotError::Read { .. })));
    std::fs::write(&path, &good).unwrap();
    assert!(Snapshot::read(&path).is_ok(), "the undamaged bytes still read");
}

#[test]
fn segments_overlapping_a_range_are_those_of_the_repository_with_events_in_it() {
    let mut state = State::default();
    let mut other_repo = seg("other", 1, 0, 5);
    other_repo.repositories = vec!["elsewhere".into()];
    let mut empty = seg("empty", 0, 10, 10);
    empty.n_events = 0;
    let mut later = seg("later", 0, 10, 20);
    (later.min_ts_ms, later.max_ts_ms) = (5_000, 6_000);
    let outcomes = run(
        &mut state,
        &[
            claim("c0", "a", 0, 1),
            claim("c1", "a", 1, 1),
            register("r1", "a", 1, seg("early", 0, 0, 10)),
            register("r2", "a", 1, later),
            register("r3", "a", 1, other_repo),
        ],
    );
    assert!(outcomes.iter().all(|o| *o == Outcome::Applied), "{outcomes:?}");
    assert!(!empty.may_hold("repo", 0, i64::MAX), "no events, nothing to read");
    let ids = |start, end| state.segments_overlapping("repo", start, end).iter().map(|s| s.info.segment_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(0, i64::MAX), ["early", "later"]);
    assert_eq!(ids(2_000, 2_000), ["early"], "both ends inclusive");
    assert_eq!(ids(2_001, 4_999), Vec::<String>::new());
    assert_eq!(ids(6_000, 7_000), ["later"]);
    assert!(state.segments_overlapping("elsewhere", 0, i64::MAX).iter().all(|s| s.info.segment_id == "other"));
}
