//! One attempt of a debate, written against the [`Host`] trait so that the resume logic can be
//! tested without a WebAssembly host.
//!
//! # Resuming
//! Every finished turn is stored in job state as `turn:<index>` before its `DebateTurn` event is
//! emitted. A retried attempt loads the stored turns, emits none of them again, and calls the
//! model only for the turns after them. The first turn it adds is marked `resumed: true`.
//! `DebateStarted` and `DebateFinished` are guarded the same way by the state keys `started` and
//! `finished`. Storing before emitting makes each event at most once: an attempt that dies
//! between the two steps leaves a stored turn that no event reports, but the transcript and the
//! result still contain it.

use crate::payload::{DebatePayload, parse_debate};
use crate::prompt::{clean_reply, request_for};
use crate::transcript::render_transcript;
use crate::turns::{PlannedTurn, TokenUsage, Turn, plan, speaker_identity};
use jobhost_plugin_sdk::JobError;
use jobhost_plugin_sdk::llm::{ChatError, ChatRequest, ChatResponse};
use serde_json::{Value, json};

/// Name of the transcript artifact.
pub const TRANSCRIPT_NAME: &str = "transcript.md";

const STARTED_KEY: &str = "started";
const FINISHED_KEY: &str = "finished";

/// The host functions a debate uses; `WitHost` in the crate root forwards them to the imports.
pub trait Host {
    fn is_cancelled(&mut self) -> bool;
    fn chat(&mut self, request: &ChatRequest) -> Result<ChatResponse, ChatError>;
    fn state_get(&mut self, key: &str) -> Option<String>;
    fn state_set(&mut self, key: &str, value: &str) -> Result<(), JobError>;
    fn emit(&mut self, name: &str, data: &Value) -> Result<(), JobError>;
    fn progress(&mut self, done: u32, total: u32, message: &str);
    fn put_artifact(
        &mut self,
        name: &str,
        content_type: &str,
        content: &[u8],
    ) -> Result<(), JobError>;
}

/// Runs (or resumes) the debate in `payload` and returns the job's result.
///
/// # Errors
/// - `invalid-payload` for a bad payload.
/// - The fatal `cancelled` when the job is cancelled between turns.
/// - A model error as the job's error, retryable when the model's error is.
/// - The retryable `empty_reply` when the model returns no text.
/// - Host write failures as the SDK's helpers map them.
pub fn run_debate(host: &mut impl Host, payload: &str) -> Result<Value, JobError> {
    let debate = parse_debate(payload)?;
    let plan = plan(&debate);
    let total = count(plan.len());

    if host.state_get(STARTED_KEY).is_none() {
        host.state_set(STARTED_KEY, "true")?;
        host.emit("DebateStarted", &started_event(&debate))?;
    }

    // Load the turns an earlier attempt finished.
    let mut turns = Vec::with_capacity(plan.len());
    for planned in &plan {
        match load_turn(host, &debate, planned)? {
            Some(turn) => turns.push(turn),
            None => break,
        }
    }
    let resumed_from = turns.len();
    if resumed_from > 0 {
        host.progress(
            count(resumed_from),
            total,
            &format!("resumed after {resumed_from} turns"),
        );
    }

    for planned in &plan[resumed_from..] {
        if host.is_cancelled() {
            return Err(JobError::cancelled());
        }
        let turn = take_turn(host, &debate, planned, &turns)?;

        // Store before emitting, so a retry never repeats this model call or this event.
        host.state_set(&turn_key(turn.turn), &to_json(&turn)?)?;
        let resumed = resumed_from > 0 && turns.len() == resumed_from;
        host.emit("DebateTurn", &turn_event(&debate, &turn, resumed))?;
        host.progress(
            turn.turn + 1,
            total,
            &format!("turn {} of {total}: {}", turn.turn + 1, turn.speaker_name),
        );
        turns.push(turn);
    }

    let transcript = render_transcript(&debate, &turns);
    host.put_artifact(TRANSCRIPT_NAME, "text/markdown", transcript.as_bytes())?;

    let mut usage = TokenUsage::default();
    for turn in &turns {
        usage.add(turn.usage);
    }
    if host.state_get(FINISHED_KEY).is_none() {
        host.state_set(FINISHED_KEY, "true")?;
        host.emit(
            "DebateFinished",
            &json!({
                "debateId": debate.debate_id,
                "turnCount": turns.len(),
                "usage": usage,
                "transcript": TRANSCRIPT_NAME,
            }),
        )?;
    }

    let synthesis = turns.last().map(|t| t.text.clone()).unwrap_or_default();
    Ok(json!({
        "debateId": debate.debate_id,
        "topic": debate.topic,
        "rounds": debate.settings.rounds,
        "turnCount": turns.len(),
        "synthesis": synthesis,
        "transcript": TRANSCRIPT_NAME,
        "usage": usage,
    }))
}

/// Asks the model for `planned` and returns the cleaned turn.
fn take_turn(
    host: &mut impl Host,
    debate: &DebatePayload,
    planned: &PlannedTurn,
    previous: &[Turn],
) -> Result<Turn, JobError> {
    let request = request_for(debate, planned, previous);
    let response = host.chat(&request)?;
    let (speaker_id, speaker_name) = speaker_identity(debate, planned.speaker);
    let text = clean_reply(
        &response.text,
        &speaker_name,
        debate.settings.max_words_per_turn,
    );
    if text.is_empty() {
        return Err(JobError::retryable(
            "empty_reply",
            format!(
                "model {} returned no text for turn {} ({speaker_name}); retrying may help",
                response.model, planned.index
            ),
        ));
    }
    Ok(Turn {
        turn: planned.index,
        round: planned.round,
        kind: planned.kind,
        speaker_id,
        speaker_name,
        text,
        model: response.model,
        usage: TokenUsage {
            prompt_tokens: response.usage.prompt_tokens,
            completion_tokens: response.usage.completion_tokens,
            total_tokens: response.usage.total_tokens,
        },
    })
}

/// Loads `turn:<index>` and checks that it is the turn the plan expects.
fn load_turn(
    host: &mut impl Host,
    debate: &DebatePayload,
    planned: &PlannedTurn,
) -> Result<Option<Turn>, JobError> {
    let key = turn_key(planned.index);
    let Some(text) = host.state_get(&key) else {
        return Ok(None);
    };
    let turn: Turn = serde_json::from_str(&text).map_err(|error| {
        JobError::fatal(
            "invalid_state",
            format!("state key {key} is not a stored debate turn: {error}"),
        )
    })?;
    let (speaker_id, _) = speaker_identity(debate, planned.speaker);
    if turn.turn != planned.index || turn.kind != planned.kind || turn.speaker_id != speaker_id {
        return Err(JobError::fatal(
            "invalid_state",
            format!(
                "state key {key} holds a {:?} turn by {:?} but the debate plan expects a {:?} \
                 turn by {speaker_id:?}; the state was written by another plugin version, so \
                 enqueue the debate again",
                turn.kind, turn.speaker_id, planned.kind
            ),
        ));
    }
    Ok(Some(turn))
}

fn started_event(debate: &DebatePayload) -> Value {
    let personas: Vec<Value> = debate
        .personas
        .iter()
        .map(|p| json!({ "id": p.id, "displayName": p.display_name }))
        .collect();
    json!({
        "debateId": debate.debate_id,
        "topic": debate.topic,
        "rounds": debate.settings.rounds,
        "personas": personas,
    })
}

fn turn_event(debate: &DebatePayload, turn: &Turn, resumed: bool) -> Value {
    json!({
        "debateId": debate.debate_id,
        "turn": turn.turn,
        "round": turn.round,
        "kind": turn.kind,
        "speakerId": turn.speaker_id,
        "speakerName": turn.speaker_name,
        "text": turn.text,
        "model": turn.model,
        "usage": turn.usage,
        "resumed": resumed,
    })
}

fn turn_key(index: u32) -> String {
    format!("turn:{index}")
}

fn to_json(turn: &Turn) -> Result<String, JobError> {
    serde_json::to_string(turn).map_err(|error| {
        JobError::fatal(
            "state_write_failed",
            format!("failed to serialize turn {}: {error}", turn.turn),
        )
    })
}

fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobhost_plugin_sdk::ErrorKind;
    use jobhost_plugin_sdk::llm::Usage;
    use std::collections::HashMap;

    /// An in-memory host whose model returns `reply`, or a text with the call number, and fails
    /// on the call numbers in `failures`.
    #[derive(Default)]
    struct FakeHost {
        state: HashMap<String, String>,
        events: Vec<(String, Value)>,
        progress: Vec<(u32, u32)>,
        artifacts: HashMap<String, (String, Vec<u8>)>,
        chat_calls: usize,
        failures: HashMap<usize, ChatError>,
        reply: Option<String>,
        cancel_after_calls: Option<usize>,
    }

    impl Host for FakeHost {
        fn is_cancelled(&mut self) -> bool {
            self.cancel_after_calls
                .is_some_and(|calls| self.chat_calls >= calls)
        }

        fn chat(&mut self, request: &ChatRequest) -> Result<ChatResponse, ChatError> {
            let call = self.chat_calls;
            self.chat_calls += 1;
            if let Some(error) = self.failures.remove(&call) {
                return Err(error);
            }
            let text = self
                .reply
                .clone()
                .unwrap_or_else(|| format!("reply {call} to {} messages", request.messages.len()));
            Ok(ChatResponse {
                text,
                model: "fake-model".to_string(),
                usage: Usage {
                    prompt_tokens: 10,
                    completion_tokens: 4,
                    total_tokens: 14,
                },
                provider: "offline".to_string(),
            })
        }

        fn state_get(&mut self, key: &str) -> Option<String> {
            self.state.get(key).cloned()
        }

        fn state_set(&mut self, key: &str, value: &str) -> Result<(), JobError> {
            self.state.insert(key.to_string(), value.to_string());
            Ok(())
        }

        fn emit(&mut self, name: &str, data: &Value) -> Result<(), JobError> {
            self.events.push((name.to_string(), data.clone()));
            Ok(())
        }

        fn progress(&mut self, done: u32, total: u32, _message: &str) {
            self.progress.push((done, total));
        }

        fn put_artifact(
            &mut self,
            name: &str,
            content_type: &str,
            content: &[u8],
        ) -> Result<(), JobError> {
            self.artifacts.insert(
                name.to_string(),
                (content_type.to_string(), content.to_vec()),
            );
            Ok(())
        }
    }

    fn payload(rounds: u32, include_moderator: bool) -> String {
        json!({
            "debateId": "deb-1",
            "topic": "Should cities ban cars?",
            "personas": [
                {"id": "ada", "displayName": "Ada"},
                {"id": "bo", "displayName": "Bo"}
            ],
            "settings": {"rounds": rounds, "includeModerator": include_moderator,
                         "maxWordsPerTurn": 20}
        })
        .to_string()
    }

    fn events_named<'a>(host: &'a FakeHost, name: &str) -> Vec<&'a Value> {
        host.events
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, data)| data)
            .collect()
    }

    fn retryable_error() -> ChatError {
        ChatError {
            retryable: true,
            code: "rate_limited".to_string(),
            message: "HTTP 429".to_string(),
        }
    }

    #[test]
    fn full_run_emits_every_turn_once() {
        let mut host = FakeHost::default();
        let result = run_debate(&mut host, &payload(2, true)).expect("debate runs");

        // 2 rounds of (2 arguments + 1 summary), then the synthesis.
        assert_eq!(host.chat_calls, 7);
        assert_eq!(events_named(&host, "DebateStarted").len(), 1);
        assert_eq!(events_named(&host, "DebateFinished").len(), 1);
        let turns = events_named(&host, "DebateTurn");
        assert_eq!(turns.len(), 7);
        for (index, turn) in turns.iter().enumerate() {
            assert_eq!(turn["turn"], index);
            assert_eq!(turn["resumed"], false);
            assert_eq!(turn["debateId"], "deb-1");
        }
        assert_eq!(turns[2]["kind"], "summary");
        assert_eq!(turns[2]["speakerId"], "moderator");
        assert_eq!(turns[6]["kind"], "synthesis");
        assert_eq!(turns[6]["round"], 3);

        assert_eq!(host.progress.last(), Some(&(7, 7)));
        assert_eq!(result["turnCount"], 7);
        assert_eq!(result["rounds"], 2);
        assert_eq!(result["transcript"], "transcript.md");
        assert_eq!(result["usage"]["totalTokens"], 7 * 14);
        assert_eq!(result["synthesis"], turns[6]["text"]);

        let (content_type, transcript) = &host.artifacts["transcript.md"];
        assert_eq!(content_type, "text/markdown");
        assert!(String::from_utf8_lossy(transcript).contains("## Synthesis"));
    }

    #[test]
    fn each_turn_is_stored_before_emitted() {
        let mut host = FakeHost::default();
        run_debate(&mut host, &payload(1, false)).expect("debate runs");
        for index in 0..3 {
            let stored: Turn =
                serde_json::from_str(&host.state[&format!("turn:{index}")]).expect("stored turn");
            assert_eq!(stored.turn, index);
        }
    }

    #[test]
    fn retry_resumes_without_repeating_turns() {
        let mut host = FakeHost::default();
        host.failures.insert(3, retryable_error());

        let error = run_debate(&mut host, &payload(2, true)).expect_err("model fails");
        assert_eq!(error.kind, ErrorKind::Retryable);
        assert_eq!(error.code, "rate_limited");
        assert_eq!(events_named(&host, "DebateTurn").len(), 3);

        // The retry calls the model only for the 4 remaining turns.
        let calls_before = host.chat_calls;
        run_debate(&mut host, &payload(2, true)).expect("retry finishes");
        assert_eq!(host.chat_calls - calls_before, 4);

        let turns = events_named(&host, "DebateTurn");
        assert_eq!(turns.len(), 7);
        let indexes: Vec<u64> = turns.iter().filter_map(|t| t["turn"].as_u64()).collect();
        assert_eq!(indexes, vec![0, 1, 2, 3, 4, 5, 6]);
        let resumed: Vec<bool> = turns
            .iter()
            .filter_map(|t| t["resumed"].as_bool())
            .collect();
        assert_eq!(
            resumed,
            vec![false, false, false, true, false, false, false]
        );
        assert_eq!(events_named(&host, "DebateStarted").len(), 1);
        assert_eq!(events_named(&host, "DebateFinished").len(), 1);
    }

    #[test]
    fn retry_after_finish_emits_nothing() {
        let mut host = FakeHost::default();
        let first = run_debate(&mut host, &payload(1, true)).expect("debate runs");
        let events = host.events.len();
        let calls = host.chat_calls;

        let second = run_debate(&mut host, &payload(1, true)).expect("rerun");
        assert_eq!(host.events.len(), events);
        assert_eq!(host.chat_calls, calls);
        assert_eq!(first, second);
    }

    #[test]
    fn fatal_model_error_fails_job() {
        let mut host = FakeHost::default();
        host.failures.insert(
            0,
            ChatError {
                retryable: false,
                code: "bad_request".to_string(),
                message: "HTTP 400: unknown model".to_string(),
            },
        );
        let error = run_debate(&mut host, &payload(1, true)).expect_err("model fails");
        assert_eq!(error.kind, ErrorKind::Fatal);
        assert_eq!(error.code, "bad_request");
        assert!(error.message.contains("unknown model"), "{}", error.message);
    }

    #[test]
    fn cancellation_stops_between_turns() {
        let mut host = FakeHost {
            cancel_after_calls: Some(2),
            ..FakeHost::default()
        };
        let error = run_debate(&mut host, &payload(2, true)).expect_err("cancelled");
        assert_eq!(error.kind, ErrorKind::Fatal);
        assert_eq!(error.code, "cancelled");
        assert_eq!(host.chat_calls, 2);
        assert_eq!(events_named(&host, "DebateTurn").len(), 2);
        assert!(events_named(&host, "DebateFinished").is_empty());
    }

    #[test]
    fn long_reply_is_cut_to_word_limit() {
        let mut host = FakeHost {
            reply: Some("word ".repeat(100)),
            ..FakeHost::default()
        };
        run_debate(&mut host, &payload(1, false)).expect("debate runs");
        for turn in events_named(&host, "DebateTurn") {
            let text = turn["text"].as_str().expect("text");
            assert_eq!(text.split_whitespace().count(), 20, "{text}");
        }
    }

    #[test]
    fn empty_reply_is_retryable() {
        let mut host = FakeHost {
            reply: Some("   ".to_string()),
            ..FakeHost::default()
        };
        let error = run_debate(&mut host, &payload(1, true)).expect_err("empty reply");
        assert_eq!(error.kind, ErrorKind::Retryable);
        assert_eq!(error.code, "empty_reply");
        assert!(!host.state.contains_key("turn:0"));
    }

    #[test]
    fn state_from_other_plan_is_rejected() {
        let mut host = FakeHost::default();
        run_debate(&mut host, &payload(1, true)).expect("debate runs");
        host.state.remove("finished");
        // Two personas, so turn 2 is the moderator's summary; a plan without it differs there.
        let error = run_debate(&mut host, &payload(1, false)).expect_err("other plan");
        assert_eq!(error.kind, ErrorKind::Fatal);
        assert_eq!(error.code, "invalid_state");
    }

    #[test]
    fn invalid_payload_calls_nothing() {
        let mut host = FakeHost::default();
        let error = run_debate(&mut host, r#"{"debateId": "d"}"#).expect_err("invalid");
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
        assert!(host.events.is_empty());
        assert!(host.state.is_empty());
    }
}
