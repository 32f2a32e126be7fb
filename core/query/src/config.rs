//! The read API's configuration, which the core embeds as `[query]` and `[[read_tokens]]`.

use serde::{Deserialize, Serialize};

use crate::lang::{DEFAULT_AGGREGATE_VALUES, DEFAULT_GROUP_LIMIT, DEFAULT_MAX_SERIES, Limits};

/// `[query]`: limits of the read API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Largest `head`, `tail` and `sort` limit (`limit=max`). `tail` and `sort` hold this
    /// many events in memory per query.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Largest number of `groupBy` groups (`limit=max`; LogScale's default is 20,000);
    /// a query with more fails with a 4xx-style error instead of a wrong count.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Most values `count(field, distinct=true)` and `percentile()` hold in one step, over
    /// all groups; a query needing more fails with a 4xx-style error.
    #[serde(default = "default_max_aggregate_values")]
    pub max_aggregate_values: usize,
    /// Largest `limit=` (series) of `timeChart` and `bucket` (LogScale's `MAX_SERIES_LIMIT`,
    /// 500). A chart's buckets × series limit is also at most `max_groups`.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Longest accepted `queryString`, in bytes.
    #[serde(default = "default_max_query_bytes")]
    pub max_query_bytes: usize,
    /// Compiled size limit of each regex or wildcard in a query, in bytes.
    #[serde(default = "default_regex_size_limit")]
    pub regex_size_limit: usize,
    /// Query jobs held at once (each holds up to `job_max_events` results); more get 429.
    #[serde(default = "default_max_jobs")]
    pub max_jobs: usize,
    /// Results a query job keeps; past it the job says so in `metaData.warnings` (the
    /// streaming `/query` endpoint has no such limit).
    #[serde(default = "default_job_max_events")]
    pub job_max_events: usize,
    /// A query job not polled for this long is deleted (LogScale: 90 s).
    #[serde(default = "default_job_idle_timeout_ms")]
    pub job_idle_timeout_ms: u64,
}

fn default_max_rows() -> usize {
    10_000
}
fn default_max_groups() -> usize {
    DEFAULT_GROUP_LIMIT
}
fn default_max_aggregate_values() -> usize {
    DEFAULT_AGGREGATE_VALUES
}
fn default_max_series() -> usize {
    DEFAULT_MAX_SERIES
}
fn default_max_query_bytes() -> usize {
    64 * 1024
}
fn default_regex_size_limit() -> usize {
    1 << 20
}
fn default_max_jobs() -> usize {
    64
}
fn default_job_max_events() -> usize {
    10_000
}
fn default_job_idle_timeout_ms() -> u64 {
    90_000
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_rows: default_max_rows(),
            max_groups: default_max_groups(),
            max_aggregate_values: default_max_aggregate_values(),
            max_series: default_max_series(),
            max_query_bytes: default_max_query_bytes(),
            regex_size_limit: default_regex_size_limit(),
            max_jobs: default_max_jobs(),
            job_max_events: default_job_max_events(),
            job_idle_timeout_ms: default_job_idle_timeout_ms(),
        }
    }
}

impl QueryConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_rows: self.max_rows,
            max_groups: self.max_groups,
            regex_size_limit: self.regex_size_limit,
            max_aggregate_values: self.max_aggregate_values,
            max_series: self.max_series,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("max_rows", self.max_rows),
            ("max_groups", self.max_groups),
            ("max_aggregate_values", self.max_aggregate_values),
            ("max_series", self.max_series),
            ("max_query_bytes", self.max_query_bytes),
            ("regex_size_limit", self.regex_size_limit),
            ("max_jobs", self.max_jobs),
            ("job_max_events", self.job_max_events),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("query.{name} must be at least 1")));
            }
        }
        if self.job_idle_timeout_ms == 0 {
            return Err(ConfigError("query.job_idle_timeout_ms must be at least 1".into()));
        }
        Ok(())
    }
}

/// `[[read_tokens]]`: a token that may read some repositories. Separate from the ingest
/// tokens: an ingest token cannot read, a read token cannot ingest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReadTokenConfig {
    pub token: String,
    /// The repositories it may read; `["*"]` for all.
    pub repositories: Vec<String>,
    /// A name for logs and error messages (the token itself is never logged).
    #[serde(default)]
    pub name: Option<String>,
}

/// A configuration the read API refuses, saying which setting to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        query: QueryConfig,
        #[serde(default)]
        read_tokens: Vec<ReadTokenConfig>,
    }

    #[test]
    fn reads_the_sections_and_refuses_unknown_keys() {
        let file: File = toml::from_str(
            r#"
            [query]
            max_rows = 500
            job_idle_timeout_ms = 1000

            [[read_tokens]]
            token = "r1"
            repositories = ["web", "db"]
            name = "grafana"

            [[read_tokens]]
            token = "r2"
            repositories = ["*"]
            "#,
        )
        .unwrap();
        assert_eq!(file.query.max_rows, 500);
        assert_eq!(file.query.max_groups, 20_000);
        assert_eq!(file.read_tokens.len(), 2);
        assert_eq!(file.read_tokens[0].name.as_deref(), Some("grafana"));

        let error = toml::from_str::<File>("[query]\nmax_row = 5\n").err().unwrap().to_string();
        assert!(error.contains("max_row"), "{error}");
        let error = toml::from_str::<File>("[[read_tokens]]\ntoken = \"x\"\nrepository = \"web\"\n").err().unwrap().to_string();
        assert!(error.contains("repository"), "{error}");
    }
}
