//! The `RUN_DEBATE` payload, its defaults and its limits.

use jobhost_plugin_sdk::{JobError, invalid_field, parse_payload};
use serde::Deserialize;
use std::collections::HashSet;

pub const MIN_PERSONAS: usize = 2;
pub const MAX_PERSONAS: usize = 8;
pub const MAX_ROUNDS: u32 = 10;
pub const MIN_WORDS_PER_TURN: u32 = 20;
pub const MAX_WORDS_PER_TURN: u32 = 1000;
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Upper bounds on free text, in characters, so that one prompt stays far below a model's context
/// window.
pub const MAX_TOPIC_CHARS: usize = 2_000;
pub const MAX_CONTEXT_CHARS: usize = 20_000;
pub const MAX_PERSONA_TEXT_CHARS: usize = 4_000;
pub const MAX_NAME_CHARS: usize = 100;

/// Speaker id of the moderator's turns; no persona may use it.
pub const MODERATOR_ID: &str = "moderator";
/// Speaker id of the closing synthesis when there is no moderator; no persona may use it.
pub const SYNTHESIS_ID: &str = "synthesis";

/// A `RUN_DEBATE` payload as it arrives (camelCase JSON). Other fields, such as the optional
/// `requestId`, are ignored: the host records the job's request id on every event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebatePayload {
    pub debate_id: String,
    pub topic: String,
    #[serde(default)]
    pub context: Option<String>,
    pub personas: Vec<Persona>,
    #[serde(default)]
    pub settings: Settings,
}

/// One debater.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persona {
    pub id: String,
    pub display_name: String,
    /// Replaces the system prompt built from `role`, `style` and `values` when set.
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub style: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Settings of a debate; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// Rounds of arguments, 1 to 10; default 2.
    pub rounds: u32,
    /// Model name; `None` uses the worker's default model.
    pub model: Option<String>,
    /// Sampling temperature, 0 to 2; default 0.7.
    pub temperature: f32,
    /// Word limit of each turn, 20 to 1000; default 150.
    pub max_words_per_turn: u32,
    /// Whether a moderator summarises each round and writes the synthesis; default true.
    pub include_moderator: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rounds: 2,
            model: None,
            temperature: 0.7,
            max_words_per_turn: 150,
            include_moderator: true,
        }
    }
}

/// Parses a `RUN_DEBATE` payload and checks it against the limits above.
///
/// # Errors
/// An `invalid-payload` error naming the first field that is missing, of the wrong type, or out
/// of range.
pub fn parse_debate(payload: &str) -> Result<DebatePayload, JobError> {
    let debate: DebatePayload = parse_payload(payload)?;
    validate(&debate)?;
    Ok(debate)
}

fn validate(debate: &DebatePayload) -> Result<(), JobError> {
    check_text("debateId", &debate.debate_id, MAX_NAME_CHARS)?;
    check_text("topic", &debate.topic, MAX_TOPIC_CHARS)?;
    if let Some(context) = &debate.context {
        check_length("context", context, MAX_CONTEXT_CHARS)?;
    }
    validate_personas(&debate.personas)?;
    validate_settings(&debate.settings)
}

fn validate_personas(personas: &[Persona]) -> Result<(), JobError> {
    if !(MIN_PERSONAS..=MAX_PERSONAS).contains(&personas.len()) {
        return Err(invalid_field(
            "personas",
            format!(
                "has {} personas; a debate needs {MIN_PERSONAS} to {MAX_PERSONAS}",
                personas.len()
            ),
        ));
    }
    let mut ids = HashSet::new();
    for (index, persona) in personas.iter().enumerate() {
        let field = format!("personas[{index}]");
        check_persona_id(&format!("{field}.id"), &persona.id)?;
        if !ids.insert(persona.id.as_str()) {
            return Err(invalid_field(
                &format!("{field}.id"),
                format!(
                    "{:?} is used by an earlier persona; ids must be unique",
                    persona.id
                ),
            ));
        }
        check_text(
            &format!("{field}.displayName"),
            &persona.display_name,
            MAX_NAME_CHARS,
        )?;
        let optional_texts = [
            ("systemPrompt", &persona.system_prompt),
            ("role", &persona.role),
            ("style", &persona.style),
        ];
        for (name, text) in optional_texts {
            if let Some(text) = text {
                check_length(&format!("{field}.{name}"), text, MAX_PERSONA_TEXT_CHARS)?;
            }
        }
        let values_chars: usize = persona.values.iter().map(|v| v.chars().count()).sum();
        if values_chars > MAX_PERSONA_TEXT_CHARS {
            return Err(invalid_field(
                &format!("{field}.values"),
                format!("has {values_chars} characters in all; at most {MAX_PERSONA_TEXT_CHARS}"),
            ));
        }
    }
    Ok(())
}

fn validate_settings(settings: &Settings) -> Result<(), JobError> {
    if !(1..=MAX_ROUNDS).contains(&settings.rounds) {
        return Err(invalid_field(
            "settings.rounds",
            format!("is {}; expected 1 to {MAX_ROUNDS}", settings.rounds),
        ));
    }
    if !(0.0..=MAX_TEMPERATURE).contains(&settings.temperature) {
        return Err(invalid_field(
            "settings.temperature",
            format!(
                "is {}; expected 0 to {MAX_TEMPERATURE}",
                settings.temperature
            ),
        ));
    }
    if !(MIN_WORDS_PER_TURN..=MAX_WORDS_PER_TURN).contains(&settings.max_words_per_turn) {
        return Err(invalid_field(
            "settings.maxWordsPerTurn",
            format!(
                "is {}; expected {MIN_WORDS_PER_TURN} to {MAX_WORDS_PER_TURN}",
                settings.max_words_per_turn
            ),
        ));
    }
    if let Some(model) = &settings.model {
        check_text("settings.model", model, MAX_NAME_CHARS)?;
    }
    Ok(())
}

/// Persona ids appear in events and state keys, so they are restricted to
/// `[A-Za-z0-9_.-]{1,64}`, and the moderator's and synthesis' ids are reserved.
fn check_persona_id(field: &str, id: &str) -> Result<(), JobError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(invalid_field(
            field,
            format!("{id:?} is not 1 to 64 characters of letters, digits, '_', '.' and '-'"),
        ));
    }
    if id == MODERATOR_ID || id == SYNTHESIS_ID {
        return Err(invalid_field(
            field,
            format!("{id:?} is reserved for the debate's own turns; choose another id"),
        ));
    }
    Ok(())
}

fn check_text(field: &str, text: &str, max_chars: usize) -> Result<(), JobError> {
    if text.trim().is_empty() {
        return Err(invalid_field(field, "is blank"));
    }
    check_length(field, text, max_chars)
}

fn check_length(field: &str, text: &str, max_chars: usize) -> Result<(), JobError> {
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(invalid_field(
            field,
            format!("has {chars} characters; at most {max_chars}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobhost_plugin_sdk::ErrorKind;
    use serde_json::{Value, json};

    fn valid() -> Value {
        json!({
            "debateId": "d1",
            "topic": "Should cities ban cars?",
            "personas": [
                {"id": "a", "displayName": "Ada"},
                {"id": "b", "displayName": "Bo", "role": "urbanist", "values": ["safety"]}
            ]
        })
    }

    fn error_with(change: impl FnOnce(&mut Value)) -> JobError {
        let mut payload = valid();
        change(&mut payload);
        parse_debate(&payload.to_string()).expect_err("invalid payload")
    }

    #[test]
    fn defaults_apply() {
        let debate = parse_debate(&valid().to_string()).expect("valid payload");
        assert_eq!(debate.settings.rounds, 2);
        assert_eq!(debate.settings.temperature, 0.7);
        assert_eq!(debate.settings.max_words_per_turn, 150);
        assert!(debate.settings.include_moderator);
        assert_eq!(debate.settings.model, None);
    }

    #[test]
    fn partial_settings_keep_other_defaults() {
        let mut payload = valid();
        payload["settings"] = json!({"rounds": 3, "model": null});
        let debate = parse_debate(&payload.to_string()).expect("valid payload");
        assert_eq!(debate.settings.rounds, 3);
        assert_eq!(debate.settings.max_words_per_turn, 150);
    }

    #[test]
    fn one_persona_is_rejected() {
        let error = error_with(|p| p["personas"].as_array_mut().expect("array").truncate(1));
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
        assert!(error.message.contains("`personas`"), "{}", error.message);
    }

    #[test]
    fn nine_personas_are_rejected() {
        let error = error_with(|p| {
            p["personas"] = (0..9)
                .map(|i| json!({"id": format!("p{i}"), "displayName": "X"}))
                .collect();
        });
        assert!(
            error.message.contains("has 9 personas"),
            "{}",
            error.message
        );
    }

    #[test]
    fn missing_display_name_names_persona() {
        let error = error_with(|p| p["personas"][1] = json!({"id": "b"}));
        assert!(error.message.contains("`personas[1]`"), "{}", error.message);
        assert!(error.message.contains("displayName"), "{}", error.message);
    }

    #[test]
    fn duplicate_persona_id_is_rejected() {
        let error = error_with(|p| p["personas"][1]["id"] = json!("a"));
        assert!(
            error.message.contains("`personas[1].id`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn reserved_persona_id_is_rejected() {
        let error = error_with(|p| p["personas"][0]["id"] = json!("moderator"));
        assert!(error.message.contains("reserved"), "{}", error.message);
    }

    #[test]
    fn persona_id_with_space_is_rejected() {
        let error = error_with(|p| p["personas"][0]["id"] = json!("a b"));
        assert!(
            error.message.contains("`personas[0].id`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn rounds_out_of_range_are_rejected() {
        for rounds in [0, 11] {
            let error = error_with(|p| p["settings"] = json!({ "rounds": rounds }));
            assert!(
                error.message.contains("`settings.rounds`"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn temperature_out_of_range_is_rejected() {
        let error = error_with(|p| p["settings"] = json!({"temperature": 2.5}));
        assert!(
            error.message.contains("`settings.temperature`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn max_words_out_of_range_are_rejected() {
        for words in [19, 1001] {
            let error = error_with(|p| p["settings"] = json!({ "maxWordsPerTurn": words }));
            assert!(
                error.message.contains("`settings.maxWordsPerTurn`"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn blank_topic_is_rejected() {
        let error = error_with(|p| p["topic"] = json!("  "));
        assert!(error.message.contains("`topic`"), "{}", error.message);
    }

    #[test]
    fn missing_debate_id_is_rejected() {
        let error = error_with(|p| {
            p.as_object_mut().expect("object").remove("debateId");
        });
        assert!(error.message.contains("debateId"), "{}", error.message);
    }
}
