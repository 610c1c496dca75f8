use crate::JobError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;

/// Error code of every payload error these helpers build.
const INVALID_PAYLOAD: &str = "invalid_payload";

/// Parses the job's JSON payload into `T`.
///
/// # Errors
/// An `invalid-payload` error whose message names the field that failed, for example
/// ``invalid payload at `personas[1].displayName`: invalid type: integer `3`, expected a string``.
/// A missing field is named by serde's message at its parent, as in
/// ``invalid payload at `settings`: missing field `rounds` ``.
pub fn parse_payload<T: DeserializeOwned>(payload: &str) -> Result<T, JobError> {
    let mut deserializer = serde_json::Deserializer::from_str(payload);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            JobError::invalid_payload(INVALID_PAYLOAD, format!("invalid payload: {inner}"))
        } else {
            JobError::invalid_payload(
                INVALID_PAYLOAD,
                format!("invalid payload at `{path}`: {inner}"),
            )
        }
    })?;
    deserializer.end().map_err(|error| {
        JobError::invalid_payload(INVALID_PAYLOAD, format!("invalid payload: {error}"))
    })?;
    Ok(value)
}

/// Builds the `invalid-payload` error ``invalid payload at `{field}`: {problem}``, for a payload
/// that parsed but breaks a rule, such as a number out of range.
pub fn invalid_field(field: &str, problem: impl Display) -> JobError {
    JobError::invalid_payload(
        INVALID_PAYLOAD,
        format!("invalid payload at `{field}`: {problem}"),
    )
}

/// Serializes a job result as the JSON text `run` returns.
///
/// # Errors
/// A fatal `invalid_result` error when `value` cannot be serialized, such as a map with non-string
/// keys.
pub fn to_result(value: &impl Serialize) -> Result<String, JobError> {
    serde_json::to_string(value).map_err(|error| {
        JobError::fatal(
            "invalid_result",
            format!("failed to serialize the job result: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Payload {
        topic: String,
        people: Vec<Person>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Person {
        display_name: String,
    }

    #[test]
    fn parse_payload_accepts_valid_json() {
        let payload: Payload =
            parse_payload(r#"{"topic": "t", "people": [{"displayName": "Ada"}]}"#)
                .expect("valid payload");
        assert_eq!(payload.topic, "t");
        assert_eq!(payload.people[0].display_name, "Ada");
    }

    #[test]
    fn parse_payload_names_nested_field() {
        let error = parse_payload::<Payload>(r#"{"topic": "t", "people": [{"displayName": 3}]}"#)
            .expect_err("wrong type");
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
        assert_eq!(error.code, "invalid_payload");
        assert!(
            error.message.contains("`people[0].displayName`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn parse_payload_names_missing_field() {
        let error = parse_payload::<Payload>(r#"{"people": []}"#).expect_err("missing topic");
        assert!(
            error.message.contains("missing field `topic`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn parse_payload_rejects_trailing_text() {
        let error = parse_payload::<Payload>(r#"{"topic": "t", "people": []} x"#)
            .expect_err("trailing text");
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
    }

    #[test]
    fn parse_payload_rejects_non_json() {
        let error = parse_payload::<Payload>("not json").expect_err("not json");
        assert!(
            error.message.starts_with("invalid payload: "),
            "{}",
            error.message
        );
    }

    #[test]
    fn invalid_field_names_field() {
        let error = invalid_field("settings.rounds", "12 is out of range 1 to 10");
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
        assert_eq!(
            error.message,
            "invalid payload at `settings.rounds`: 12 is out of range 1 to 10"
        );
    }

    #[test]
    fn to_result_serializes_json() {
        assert_eq!(
            to_result(&serde_json::json!({"a": 1})).expect("json"),
            r#"{"a":1}"#
        );
    }
}
