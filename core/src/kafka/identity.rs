//! Which Kafka cluster and which topics this node talks to: the cluster id and the ids
//! Kafka gave the ingest and Global topics when it created them. A topic deleted and
//! created again under the same name gets a new id, and its offsets start over: Global's
//! resume points and segments then describe records that no longer exist, so the node
//! must stop rather than read the new topic as if it were the old (`cluster::topics`).
//!
//! rust-rdkafka wraps the cluster id but not `DescribeTopics`, so the topic ids come from
//! librdkafka's C API directly: the one `unsafe` block of the Kafka room, kept to the calls
//! and their cleanup.

use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use rdkafka::bindings as rd;

use super::admin_client;
use crate::config::KafkaConfig;

/// The cluster and topic ids Kafka answers now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: String,
    /// `(topic name, topic id)` in the order asked.
    pub topics: Vec<(String, String)>,
}

/// Asks Kafka for its cluster id and the ids of `topics` (which must exist).
pub fn describe(
    config: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<Identity, String> {
    let admin = admin_client(config)?;
    let cluster_id = admin
        .inner()
        .fetch_cluster_id(timeout)
        .ok_or_else(|| "Kafka did not tell its cluster id in time".to_owned())?;
    let topics = describe_topics(admin.inner().native_ptr(), topics, timeout)?;
    Ok(Identity { cluster_id, topics })
}

/// `DescribeTopics` for `names`: each topic's id, base64 as Kafka's tools print it.
#[allow(unsafe_code)]
fn describe_topics(
    rk: *mut rd::rd_kafka_t,
    names: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, String)>, String> {
    let c_names: Vec<CString> = names
        .iter()
        .map(|n| CString::new(*n).map_err(|_| format!("topic name {n:?} has a NUL byte")))
        .collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const c_char> = c_names.iter().map(|n| n.as_ptr()).collect();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `rk` is the live handle of `admin` in `describe`, which outlives this call.
    // Every object created here is destroyed before returning, on every path; the
    // strings read from the result are copied before the event that owns them is
    // destroyed; `pointers` and `c_names` outlive the collection built from them.
    unsafe {
        let collection =
            rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms);
        let result = if event.is_null() {
            Err(format!(
                "Kafka did not describe the topics {names:?} within {} ms",
                timeout.as_millis()
            ))
        } else if rd::rd_kafka_event_error(event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            Err(format!(
                "describing the topics {names:?} failed: {}",
                text(rd::rd_kafka_event_error_string(event))
            ))
        } else {
            let described = rd::rd_kafka_event_DescribeTopics_result(event);
            let mut count = 0usize;
            let descriptions = rd::rd_kafka_DescribeTopics_result_topics(described, &mut count);
            let mut ids = Vec::with_capacity(count);
            let mut failure = None;
            for i in 0..count {
                let description = *descriptions.add(i);
                let name = text(rd::rd_kafka_TopicDescription_name(description));
                let error = rd::rd_kafka_TopicDescription_error(description);
                if !error.is_null()
                    && rd::rd_kafka_error_code(error)
                        != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                {
                    failure = Some(format!(
                        "topic {name}: {}",
                        text(rd::rd_kafka_error_string(error))
                    ));
                    break;
                }
                let id = rd::rd_kafka_TopicDescription_topic_id(description);
                ids.push((
                    name,
                    if id.is_null() {
                        String::new()
                    } else {
                        text(rd::rd_kafka_Uuid_base64str(id))
                    },
                ));
            }
            match failure {
                Some(failure) => Err(failure),
                None => Ok(ids),
            }
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_TopicCollection_destroy(collection);
        let ids = result?;
        // In the order asked: Kafka answers in its own.
        names
            .iter()
            .map(|name| {
                ids.iter()
                    .find(|(n, _)| n == name)
                    .cloned()
                    .filter(|(_, id)| !id.is_empty())
                    .ok_or_else(|| format!("Kafka gave no id for topic {name}"))
            })
            .collect()
    }
}

/// A C string owned by librdkafka, copied (empty for null).
///
/// # Safety
/// `pointer` is null or a NUL-terminated string that stays valid during the call.
#[allow(unsafe_code)]
unsafe fn text(pointer: *const c_char) -> String {
    if pointer.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(pointer) }
        .to_string_lossy()
        .into_owned()
}
