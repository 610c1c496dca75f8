//! The `ingest_docs` plugin: handles `INGEST_DOCS`.
//!
//! It validates the payload `{"source": string, "documents": [{"id": string, "text": string}
//! or {"id": string, "url": string}]}` and rejects a bad one with an `invalid-payload` error that
//! names the field.
//!
//! NOTE: ingesting is not implemented yet. A valid payload fails with the fatal error
//! `not_implemented`, so an ingest job fails at once instead of being retried. This stays until
//! there is a document store to ingest into.

use jobhost_plugin_sdk::{Guest, Job, JobError, PluginInfo, export_plugin, invalid_field};
use serde::Deserialize;
use std::collections::HashSet;

const JOB_TYPE: &str = "INGEST_DOCS";

struct IngestDocs;

impl Guest for IngestDocs {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "ingest_docs".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            job_types: vec![JOB_TYPE.to_string()],
            description: "Validates document ingestion requests; ingesting is not implemented yet"
                .to_string(),
        }
    }

    fn run(job: Job) -> Result<String, JobError> {
        let ingest = parse_ingest(&job.payload)?;
        Err(JobError::fatal(
            "not_implemented",
            format!(
                "ingesting {} documents from source {:?} is not implemented yet",
                ingest.documents.len(),
                ingest.source
            ),
        ))
    }
}

export_plugin!(IngestDocs);

/// An `INGEST_DOCS` payload.
#[derive(Debug, Deserialize)]
pub struct IngestPayload {
    pub source: String,
    pub documents: Vec<Document>,
}

/// One document, given inline as `text` or by `url`.
#[derive(Debug, Deserialize)]
pub struct Document {
    pub id: String,
    pub text: Option<String>,
    pub url: Option<String>,
}

/// Parses and checks an `INGEST_DOCS` payload: a non-blank source, at least one document, and
/// documents with non-blank, unique ids and exactly one of `text` and `url`.
pub fn parse_ingest(payload: &str) -> Result<IngestPayload, JobError> {
    let ingest: IngestPayload = jobhost_plugin_sdk::parse_payload(payload)?;
    if ingest.source.trim().is_empty() {
        return Err(invalid_field(
            "source",
            "is blank; name where the documents come from",
        ));
    }
    if ingest.documents.is_empty() {
        return Err(invalid_field(
            "documents",
            "is empty; give at least one document",
        ));
    }
    let mut seen = HashSet::new();
    for (index, document) in ingest.documents.iter().enumerate() {
        let field = format!("documents[{index}]");
        if document.id.trim().is_empty() {
            return Err(invalid_field(&format!("{field}.id"), "is blank"));
        }
        if !seen.insert(document.id.as_str()) {
            return Err(invalid_field(
                &format!("{field}.id"),
                format!(
                    "{:?} is used by an earlier document; ids must be unique",
                    document.id
                ),
            ));
        }
        match (&document.text, &document.url) {
            (Some(_), Some(_)) => {
                return Err(invalid_field(&field, "has both `text` and `url`; give one"));
            }
            (None, None) => {
                return Err(invalid_field(
                    &field,
                    "has neither `text` nor `url`; give one",
                ));
            }
            (Some(text), None) if text.trim().is_empty() => {
                return Err(invalid_field(&format!("{field}.text"), "is blank"));
            }
            (None, Some(url)) if !is_http_url(url) => {
                return Err(invalid_field(
                    &format!("{field}.url"),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            _ => {}
        }
    }
    Ok(ingest)
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobhost_plugin_sdk::ErrorKind;

    fn error_of(payload: &str) -> JobError {
        parse_ingest(payload).expect_err("invalid payload")
    }

    #[test]
    fn valid_payload_parses() {
        let ingest = parse_ingest(
            r#"{"source": "s", "documents": [{"id": "a", "text": "t"},
                {"id": "b", "url": "https://example.org/doc"}]}"#,
        )
        .expect("valid payload");
        assert_eq!(ingest.documents.len(), 2);
    }

    #[test]
    fn document_without_id_names_field() {
        let error = error_of(r#"{"source": "s", "documents": [{"text": "t"}]}"#);
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
        assert!(
            error.message.contains("`documents[0]`"),
            "{}",
            error.message
        );
        assert!(error.message.contains("`id`"), "{}", error.message);
    }

    #[test]
    fn document_needs_text_or_url() {
        let error = error_of(r#"{"source": "s", "documents": [{"id": "a"}]}"#);
        assert!(error.message.contains("neither"), "{}", error.message);
    }

    #[test]
    fn document_with_text_and_url_is_rejected() {
        let error = error_of(
            r#"{"source": "s", "documents": [{"id": "a", "text": "t", "url": "https://x"}]}"#,
        );
        assert!(error.message.contains("both"), "{}", error.message);
    }

    #[test]
    fn non_http_url_is_rejected() {
        let error = error_of(r#"{"source": "s", "documents": [{"id": "a", "url": "file:///x"}]}"#);
        assert!(
            error.message.contains("`documents[0].url`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn duplicate_id_is_rejected() {
        let error = error_of(
            r#"{"source": "s", "documents": [{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]}"#,
        );
        assert!(
            error.message.contains("`documents[1].id`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn blank_source_is_rejected() {
        let error = error_of(r#"{"source": "", "documents": [{"id": "a", "text": "t"}]}"#);
        assert!(error.message.contains("`source`"), "{}", error.message);
    }
}
