//! AI debates: the request a client submits, its validation with defaults, and the stored record.
//!
//! A debate runs as one `RUN_DEBATE` job handled by the bundled `debate` plugin. This module only
//! checks and stores what the client requested. The turns, the transcript and the synthesis come
//! from the run's events and artifacts.
//!
//! # Layout
//! - `panel`: the personas used when a request names none.
//! - `store`: one JSON file per debate under `<data>/debates/`.

mod panel;
mod store;

pub use panel::default_panel;
pub use store::{DebateStore, DebateStoreError};

use crate::job::validate_id;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// Job type of a debate run.
pub const JOB_TYPE: &str = "RUN_DEBATE";

/// Topic length after trimming, in characters.
pub const TOPIC_CHARS: std::ops::RangeInclusive<usize> = 3..=2000;
/// Maximum length of the background text, in characters.
pub const MAX_CONTEXT_CHARS: usize = 10_000;
/// Number of personas in a debate, not counting the moderator.
pub const PERSONA_COUNT: std::ops::RangeInclusive<usize> = 2..=8;
pub const MAX_DISPLAY_NAME_CHARS: usize = 80;
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 4000;
/// Longest `role` or `style` of a persona, in characters.
pub const MAX_TRAIT_CHARS: usize = 200;
pub const MAX_VALUES: usize = 10;
pub const MAX_VALUE_CHARS: usize = 100;
pub const MAX_MODEL_CHARS: usize = 100;
/// Speaker ids the debate plugin uses for its own turns, so no persona may take them.
pub const RESERVED_PERSONA_IDS: [&str; 2] = ["moderator", "synthesis"];
pub const ROUNDS: std::ops::RangeInclusive<u32> = 1..=10;
pub const TEMPERATURE: std::ops::RangeInclusive<f64> = 0.0..=2.0;
pub const MAX_WORDS_PER_TURN: std::ops::RangeInclusive<u32> = 20..=1000;

pub const DEFAULT_ROUNDS: u32 = 2;
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
pub const DEFAULT_MAX_WORDS_PER_TURN: u32 = 150;

/// A debate as a client submits it. Every field but `topic` is optional, and `validate` fills
/// the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DebateRequest {
    /// Id to file the debate under, a new UUID v7 when absent.
    pub debate_id: Option<String>,
    pub topic: String,
    /// Background the personas should take into account.
    pub context: Option<String>,
    /// The panel, `default_panel()` when absent.
    pub personas: Option<Vec<PersonaRequest>>,
    pub settings: Option<SettingsRequest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonaRequest {
    pub id: String,
    pub display_name: String,
    pub system_prompt: Option<String>,
    pub role: Option<String>,
    pub style: Option<String>,
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsRequest {
    pub rounds: Option<u32>,
    pub temperature: Option<f64>,
    pub max_words_per_turn: Option<u32>,
    pub include_moderator: Option<bool>,
    pub model: Option<String>,
}

/// A validated debate with every default filled in: the `RUN_DEBATE` payload without its
/// `requestId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateSpec {
    pub debate_id: String,
    pub topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub personas: Vec<Persona>,
    pub settings: DebateSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persona {
    pub id: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateSettings {
    pub rounds: u32,
    /// Model name. `None` uses the worker's default model (`LLM_MODEL`).
    pub model: Option<String>,
    pub temperature: f64,
    pub max_words_per_turn: u32,
    /// Whether a moderator summarizes each round and writes the closing synthesis.
    pub include_moderator: bool,
}

impl Default for DebateSettings {
    fn default() -> Self {
        DebateSettings {
            rounds: DEFAULT_ROUNDS,
            model: None,
            temperature: DEFAULT_TEMPERATURE,
            max_words_per_turn: DEFAULT_MAX_WORDS_PER_TURN,
            include_moderator: true,
        }
    }
}

/// A stored debate: what was asked, when, and the job that runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateRecord {
    #[serde(flatten)]
    pub spec: DebateSpec,
    pub created_at: DateTime<Utc>,
    pub request_id: Option<String>,
    /// The latest job started for this debate. A new job replaces it only after the previous one
    /// failed or was cancelled.
    pub job_id: String,
    /// The run of `job_id` when it was enqueued. A manual retry of the job starts another run, so
    /// readers prefer the job's current `runId`.
    pub run_id: String,
}

/// A rejected debate request: the field at fault, as a path such as `personas[1].id`, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidDebate {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidDebate {
    InvalidDebate {
        field: field.into(),
        message: message.into(),
    }
}

impl DebateRequest {
    /// Checks every field, trims text, and fills the defaults. Generates the debate id when the
    /// request has none.
    pub fn validate(self) -> Result<DebateSpec, InvalidDebate> {
        let debate_id = match self.debate_id {
            Some(id) => {
                validate_id("debate id", &id).map_err(|message| invalid("debateId", message))?;
                // `/api/debates/run` is the route that submits a debate, so a debate with this id
                // could never be read back.
                if id == "run" {
                    return Err(invalid(
                        "debateId",
                        "debate id \"run\" is reserved by the route POST /api/debates/run: choose another id",
                    ));
                }
                id
            }
            None => crate::job::new_id(),
        };

        let topic = self.topic.trim().to_string();
        let topic_chars = topic.chars().count();
        if !TOPIC_CHARS.contains(&topic_chars) {
            return Err(invalid(
                "topic",
                format!(
                    "topic has {topic_chars} characters after trimming: use {} to {}",
                    TOPIC_CHARS.start(),
                    TOPIC_CHARS.end()
                ),
            ));
        }

        let context = optional_text("context", self.context, MAX_CONTEXT_CHARS)?;
        let personas = match self.personas {
            Some(personas) => validate_personas(personas)?,
            None => default_panel(),
        };
        let settings = validate_settings(self.settings.unwrap_or_default())?;

        Ok(DebateSpec {
            debate_id,
            topic,
            context,
            personas,
            settings,
        })
    }
}

fn validate_personas(personas: Vec<PersonaRequest>) -> Result<Vec<Persona>, InvalidDebate> {
    if !PERSONA_COUNT.contains(&personas.len()) {
        return Err(invalid(
            "personas",
            format!(
                "a debate needs {} to {} personas, got {}",
                PERSONA_COUNT.start(),
                PERSONA_COUNT.end(),
                personas.len()
            ),
        ));
    }

    let mut seen = HashSet::new();
    let mut validated = Vec::with_capacity(personas.len());
    for (index, persona) in personas.into_iter().enumerate() {
        let field = |name: &str| format!("personas[{index}].{name}");

        validate_id("persona id", &persona.id).map_err(|message| invalid(field("id"), message))?;
        if RESERVED_PERSONA_IDS.contains(&persona.id.as_str()) {
            return Err(invalid(
                field("id"),
                format!(
                    "persona id {:?} is reserved for the debate's own turns: choose another id",
                    persona.id
                ),
            ));
        }
        if !seen.insert(persona.id.clone()) {
            return Err(invalid(
                field("id"),
                format!(
                    "duplicate persona id {:?}: give each persona its own id",
                    persona.id
                ),
            ));
        }

        let display_name = persona.display_name.trim().to_string();
        if display_name.is_empty() || display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(invalid(
                field("displayName"),
                format!("display name must have 1 to {MAX_DISPLAY_NAME_CHARS} characters"),
            ));
        }

        let values = persona.values.unwrap_or_default();
        if values.len() > MAX_VALUES {
            return Err(invalid(
                field("values"),
                format!("at most {MAX_VALUES} values, got {}", values.len()),
            ));
        }
        let mut trimmed_values = Vec::with_capacity(values.len());
        for (value_index, value) in values.into_iter().enumerate() {
            let value_field = format!("personas[{index}].values[{value_index}]");
            match optional_text(&value_field, Some(value), MAX_VALUE_CHARS)? {
                Some(value) => trimmed_values.push(value),
                None => return Err(invalid(value_field, "value is empty")),
            }
        }

        validated.push(Persona {
            id: persona.id,
            display_name,
            system_prompt: optional_text(
                &field("systemPrompt"),
                persona.system_prompt,
                MAX_SYSTEM_PROMPT_CHARS,
            )?,
            role: optional_text(&field("role"), persona.role, MAX_TRAIT_CHARS)?,
            style: optional_text(&field("style"), persona.style, MAX_TRAIT_CHARS)?,
            values: trimmed_values,
        });
    }
    Ok(validated)
}

fn validate_settings(settings: SettingsRequest) -> Result<DebateSettings, InvalidDebate> {
    let defaults = DebateSettings::default();

    let rounds = settings.rounds.unwrap_or(defaults.rounds);
    if !ROUNDS.contains(&rounds) {
        return Err(invalid(
            "settings.rounds",
            format!(
                "rounds is {rounds}: use {} to {}",
                ROUNDS.start(),
                ROUNDS.end()
            ),
        ));
    }

    let temperature = settings.temperature.unwrap_or(defaults.temperature);
    if !TEMPERATURE.contains(&temperature) {
        return Err(invalid(
            "settings.temperature",
            format!(
                "temperature is {temperature}: use {} to {}",
                TEMPERATURE.start(),
                TEMPERATURE.end()
            ),
        ));
    }

    let max_words_per_turn = settings
        .max_words_per_turn
        .unwrap_or(defaults.max_words_per_turn);
    if !MAX_WORDS_PER_TURN.contains(&max_words_per_turn) {
        return Err(invalid(
            "settings.maxWordsPerTurn",
            format!(
                "maxWordsPerTurn is {max_words_per_turn}: use {} to {}",
                MAX_WORDS_PER_TURN.start(),
                MAX_WORDS_PER_TURN.end()
            ),
        ));
    }

    let model = optional_text("settings.model", settings.model, MAX_MODEL_CHARS)?;

    Ok(DebateSettings {
        rounds,
        model,
        temperature,
        max_words_per_turn,
        include_moderator: settings
            .include_moderator
            .unwrap_or(defaults.include_moderator),
    })
}

/// Trims optional text, so blank text becomes `None`. Text longer than `max_chars` or with
/// control characters other than newlines and tabs is rejected.
fn optional_text(
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, InvalidDebate> {
    let Some(value) = value else {
        return Ok(None);
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(invalid(
            field,
            format!("text has {chars} characters: use at most {max_chars}"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid(
            field,
            "text contains control characters other than newlines and tabs",
        ));
    }
    Ok(Some(trimmed.to_string()))
}

impl DebateSpec {
    /// Builds the `RUN_DEBATE` job payload: this spec plus the id of the request that submitted
    /// it, which the debate plugin copies into its events.
    pub fn job_payload(&self, request_id: Option<&str>) -> Value {
        let mut payload = serde_json::to_value(self).unwrap_or(Value::Null);
        if let (Some(object), Some(request_id)) = (payload.as_object_mut(), request_id) {
            object.insert("requestId".to_string(), Value::from(request_id));
        }
        payload
    }

    /// Returns the idempotency key of this debate's job, so that posting the same debate id twice
    /// runs it once.
    pub fn idempotency_key(&self) -> String {
        format!("{JOB_TYPE}:{}", self.debate_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> DebateRequest {
        serde_json::from_value(value).expect("request deserializes")
    }

    fn error_field(value: Value) -> String {
        request(value)
            .validate()
            .expect_err("request is invalid")
            .field
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let spec = request(json!({ "topic": "  Should cities ban cars?  " }))
            .validate()
            .expect("valid");
        assert_eq!(spec.topic, "Should cities ban cars?");
        assert_eq!(spec.personas, default_panel());
        assert_eq!(spec.settings, DebateSettings::default());
        assert!(validate_id("debate id", &spec.debate_id).is_ok());
    }

    #[test]
    fn payload_has_contract_shape() {
        let spec = request(json!({ "debateId": "d-1", "topic": "Remote work" }))
            .validate()
            .expect("valid");
        let payload = spec.job_payload(Some("req-9"));
        assert_eq!(payload["debateId"], "d-1");
        assert_eq!(payload["requestId"], "req-9");
        assert_eq!(payload["settings"]["rounds"], 2);
        assert_eq!(payload["settings"]["maxWordsPerTurn"], 150);
        assert_eq!(payload["settings"]["includeModerator"], true);
        assert!(payload["settings"]["model"].is_null());
        assert_eq!(payload["settings"]["temperature"], json!(0.7));
        assert!(payload.get("context").is_none());
        assert_eq!(spec.idempotency_key(), "RUN_DEBATE:d-1");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let personas = |ids: &[&str]| {
            ids.iter()
                .map(|id| json!({ "id": id, "displayName": "Name" }))
                .collect::<Vec<_>>()
        };
        let cases = [
            (json!({ "topic": " ab " }), "topic"),
            (json!({ "topic": "x".repeat(2001) }), "topic"),
            (json!({ "topic": "abc", "debateId": "../x" }), "debateId"),
            (json!({ "topic": "abc", "debateId": "run" }), "debateId"),
            (
                json!({ "topic": "abc", "context": "c".repeat(MAX_CONTEXT_CHARS + 1) }),
                "context",
            ),
            (
                json!({ "topic": "abc", "personas": personas(&["a"]) }),
                "personas",
            ),
            (
                json!({ "topic": "abc", "personas": personas(&["a", "b", "c", "d", "e", "f", "g", "h", "i"]) }),
                "personas",
            ),
            (
                json!({ "topic": "abc", "personas": personas(&["a", "a"]) }),
                "personas[1].id",
            ),
            (
                json!({ "topic": "abc", "personas": personas(&["a", "b c"]) }),
                "personas[1].id",
            ),
            (
                json!({ "topic": "abc", "personas": personas(&["moderator", "b"]) }),
                "personas[0].id",
            ),
            (
                json!({ "topic": "abc", "personas": [
                    { "id": "a", "displayName": "A" },
                    { "id": "b", "displayName": "   " },
                ] }),
                "personas[1].displayName",
            ),
            (
                json!({ "topic": "abc", "personas": [
                    { "id": "a", "displayName": "A", "values": ["ok", " "] },
                    { "id": "b", "displayName": "B" },
                ] }),
                "personas[0].values[1]",
            ),
            (
                json!({ "topic": "abc", "settings": { "rounds": 0 } }),
                "settings.rounds",
            ),
            (
                json!({ "topic": "abc", "settings": { "rounds": 11 } }),
                "settings.rounds",
            ),
            (
                json!({ "topic": "abc", "settings": { "temperature": 2.5 } }),
                "settings.temperature",
            ),
            (
                json!({ "topic": "abc", "settings": { "maxWordsPerTurn": 19 } }),
                "settings.maxWordsPerTurn",
            ),
            (
                json!({ "topic": "abc", "settings": { "model": "m".repeat(MAX_MODEL_CHARS + 1) } }),
                "settings.model",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(error_field(value.clone()), field, "request {value}");
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        let spec = request(json!({
            "topic": "abc",
            "personas": [
                { "id": "a", "displayName": "A", "values": [" fairness "] },
                { "id": "b", "displayName": "B", "role": "  ", "style": "dry" },
            ],
            "settings": { "rounds": 10, "temperature": 2.0, "maxWordsPerTurn": 20,
                          "includeModerator": false, "model": " gpt-x " },
        }))
        .validate()
        .expect("valid");
        assert_eq!(spec.personas[0].values, vec!["fairness".to_string()]);
        assert_eq!(spec.personas[1].role, None);
        assert_eq!(spec.personas[1].style.as_deref(), Some("dry"));
        assert_eq!(spec.settings.rounds, 10);
        assert_eq!(spec.settings.model.as_deref(), Some("gpt-x"));
        assert!(!spec.settings.include_moderator);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let result: Result<DebateRequest, _> =
            serde_json::from_value(json!({ "topic": "abc", "rouns": 3 }));
        assert!(result.is_err());
    }
}
