//! What the digest stored, checked: once the digest caught up with Kafka's high
//! watermarks, every partition's registered segments tile its offsets from 0, every
//! segment file is on some node with the hash and event count Global registered, and every
//! event in them is read back (`Stored`). Also Global as the topic holds it now.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir_core::config::CoreConfig;
use weir_core::cluster::GlobalError;
use weir_global::State;
use weir_segment::{SegmentReader, SegmentRow};

use crate::kafka::{self, KafkaFailure};

/// How long the digest may take to catch up with Kafka.
const CATCH_UP: Duration = Duration::from_secs(60);

/// What Global and the nodes' segment files hold once the digest caught up with Kafka.
pub struct Stored {
    pub state: State,
    /// Every event of every registered segment, with its segment id.
    pub rows: Vec<(String, SegmentRow)>,
}

impl Stored {
    /// Each raw text stored, with how often.
    pub fn raws(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, row) in &self.rows {
            *counts.entry(row.raw.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The stored event whose raw text is `raw`; panics if there is none.
    pub fn row(&self, raw: &str) -> &SegmentRow {
        &self.rows.iter().find(|(_, r)| r.raw == raw).unwrap_or_else(|| panic!("no stored event {raw:?}")).1
    }
}

/// A Global read that failed because Kafka answered transiently, or because the read
/// could not catch up with the topic in time on a loaded machine, may succeed when asked
/// again.
impl kafka::Transient for GlobalError {
    fn is_transient(&self) -> bool {
        match self {
            GlobalError::Read { source, .. } => kafka::is_transient(&source.0),
            GlobalError::CatchUpTimeout { .. } => true,
            _ => false,
        }
    }
}

/// Global as the topic holds it now (`weir-core global dump`'s reading, in-process). Read
/// again on transient failures until [`kafka::METADATA_TIMEOUT`].
pub async fn global_state(config: &CoreConfig) -> Result<State, Box<KafkaFailure<GlobalError>>> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let what = format!("global state from topic {}", config.kafka.global_topic);
        kafka::retry_transient(&what, Instant::now() + kafka::METADATA_TIMEOUT, |_| {
            weir_core::cluster::global_log::dump(&config, Duration::from_secs(20)).map(|snapshot| snapshot.state)
        })
        .map_err(Box::new)
    })
    .await
    .expect("global read task")
}

/// Waits until Global's resume point of every partition reached Kafka's high watermark,
/// checks that the segments tile the offsets, then reads every registered segment from
/// whichever of `data_dirs` has it.
pub async fn stored(config: &CoreConfig, data_dirs: &[PathBuf]) -> Stored {
    let (bootstrap, topic) = (config.kafka.bootstrap_servers.clone(), config.kafka.ingest_topic.clone());
    let high: BTreeMap<u32, u64> = {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            let metadata = kafka::Metadata::new(&bootstrap);
            let layout = metadata.topic_layout(&topic, kafka::METADATA_TIMEOUT).expect("topic layout");
            layout
                .iter()
                .map(|p| (p.partition as u32, metadata.high_watermark(&topic, p.partition, kafka::METADATA_TIMEOUT).expect("high watermark") as u64))
                .collect()
        })
        .await
        .unwrap()
    };
    let state = crate::eventually("the digest caught up with Kafka", CATCH_UP, || {
        let high = high.clone();
        async move {
            let state = global_state(config).await.ok()?;
            high.iter().all(|(p, h)| state.resume_point(*p) >= *h).then_some(state)
        }
    })
    .await;
    for (p, h) in &high {
        let segments = state.segments(*p);
        // Segments tile from 0, except below a recorded log start (`set_log_start`: records
        // Kafka deleted before they were read, audited in Global).
        let log_start = state.partition(*p).log_start;
        let mut next = segments.first().map_or(0, |s| s.info.offset_start);
        assert!(
            next == 0 || next <= log_start,
            "partition {p}: segments start at {next}, not at 0 nor at or below the log start {log_start}"
        );
        for segment in &segments {
            let jump = segment.info.offset_start == log_start && next < log_start;
            assert!(
                segment.info.offset_start == next || jump,
                "partition {p}: segment {} leaves a gap or overlaps",
                segment.info.segment_id
            );
            assert!(segment.info.offset_end > segment.info.offset_start);
            next = segment.info.offset_end;
        }
        assert!(next >= *h, "partition {p}: segments end at {next}, Kafka's high watermark is {h}");
    }
    let mut rows = Vec::new();
    for p in state.partitions() {
        for segment in state.segments(p) {
            let name = weir_segment::segment_file_name(&segment.info.segment_id);
            let path = data_dirs
                .iter()
                .map(|d| d.join("segments").join(&name))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("registered segment {} is on no node", segment.info.segment_id));
            assert_eq!(weir_segment::blake3_of_file(&path).unwrap(), segment.info.blake3, "{}", path.display());
            let reader = SegmentReader::open(&path).unwrap();
            let before = rows.len();
            for row in reader.all_rows().unwrap() {
                rows.push((segment.info.segment_id.clone(), row.unwrap()));
            }
            assert_eq!((rows.len() - before) as u64, segment.info.n_events, "{}", segment.info.segment_id);
        }
    }
    Stored { state, rows }
}
