//! The turn plan of a debate and the record of a finished turn.

use crate::payload::{DebatePayload, MODERATOR_ID, SYNTHESIS_ID};
use serde::{Deserialize, Serialize};

/// Display name of the moderator's turns.
pub const MODERATOR_NAME: &str = "Moderator";
/// Display name of the closing synthesis written without a moderator.
pub const SYNTHESIS_NAME: &str = "Synthesis";

/// Kind of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnKind {
    /// A persona's argument in a round.
    Argument,
    /// The moderator's summary that closes a round.
    Summary,
    /// The closing synthesis after the last round.
    Synthesis,
}

/// Speaker of a planned turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The persona at this index of the payload's `personas`.
    Persona(usize),
    Moderator,
    /// The neutral author of the synthesis when the debate has no moderator.
    Synthesizer,
}

/// One turn of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTurn {
    /// 0-based position in the whole debate.
    pub index: u32,
    /// 1-based round; the synthesis is round `rounds + 1`.
    pub round: u32,
    pub kind: TurnKind,
    pub speaker: Speaker,
}

/// Token counts in the camelCase shape of events and results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl TokenUsage {
    /// Adds `other` to `self`, saturating at `u32::MAX`.
    pub fn add(&mut self, other: TokenUsage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
    }
}

/// A finished turn: stored in job state as `turn:<index>` and emitted as a `DebateTurn` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    pub turn: u32,
    pub round: u32,
    pub kind: TurnKind,
    pub speaker_id: String,
    pub speaker_name: String,
    pub text: String,
    pub model: String,
    pub usage: TokenUsage,
}

/// Lists every turn of `debate` in order. In each round every persona argues in payload order,
/// then the moderator, when included, summarises. The synthesis closes the debate.
pub fn plan(debate: &DebatePayload) -> Vec<PlannedTurn> {
    let settings = &debate.settings;
    let mut turns = Vec::new();
    let mut push = |round, kind, speaker| {
        let index = u32::try_from(turns.len()).unwrap_or(u32::MAX);
        turns.push(PlannedTurn {
            index,
            round,
            kind,
            speaker,
        });
    };
    for round in 1..=settings.rounds {
        for persona in 0..debate.personas.len() {
            push(round, TurnKind::Argument, Speaker::Persona(persona));
        }
        if settings.include_moderator {
            push(round, TurnKind::Summary, Speaker::Moderator);
        }
    }
    let closer = if settings.include_moderator {
        Speaker::Moderator
    } else {
        Speaker::Synthesizer
    };
    push(settings.rounds + 1, TurnKind::Synthesis, closer);
    turns
}

/// Returns the speaker's id and display name as they appear in events.
pub fn speaker_identity(debate: &DebatePayload, speaker: Speaker) -> (String, String) {
    match speaker {
        Speaker::Persona(index) => {
            let persona = &debate.personas[index];
            (persona.id.clone(), persona.display_name.clone())
        }
        Speaker::Moderator => (MODERATOR_ID.to_string(), MODERATOR_NAME.to_string()),
        Speaker::Synthesizer => (SYNTHESIS_ID.to_string(), SYNTHESIS_NAME.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::parse_debate;
    use serde_json::json;

    fn debate(rounds: u32, include_moderator: bool) -> DebatePayload {
        let payload = json!({
            "debateId": "d",
            "topic": "t",
            "personas": [
                {"id": "a", "displayName": "A"},
                {"id": "b", "displayName": "B"},
                {"id": "c", "displayName": "C"}
            ],
            "settings": {"rounds": rounds, "includeModerator": include_moderator}
        });
        parse_debate(&payload.to_string()).expect("valid payload")
    }

    #[test]
    fn plan_with_moderator_summarises_each_round() {
        let turns = plan(&debate(2, true));
        assert_eq!(turns.len(), 2 * (3 + 1) + 1);
        assert_eq!(turns[3].kind, TurnKind::Summary);
        assert_eq!(turns[3].speaker, Speaker::Moderator);
        assert_eq!(turns[4].round, 2);
        assert_eq!(turns[4].speaker, Speaker::Persona(0));
        let last = turns.last().expect("synthesis");
        assert_eq!(last.kind, TurnKind::Synthesis);
        assert_eq!(last.round, 3);
        assert_eq!(last.speaker, Speaker::Moderator);
    }

    #[test]
    fn plan_without_moderator_has_neutral_synthesis() {
        let turns = plan(&debate(1, false));
        assert_eq!(turns.len(), 3 + 1);
        assert!(turns.iter().all(|t| t.kind != TurnKind::Summary));
        let last = turns.last().expect("synthesis");
        assert_eq!(last.speaker, Speaker::Synthesizer);
    }

    #[test]
    fn plan_indexes_are_positions() {
        for (position, turn) in plan(&debate(3, true)).iter().enumerate() {
            assert_eq!(turn.index as usize, position);
        }
    }

    #[test]
    fn usage_adds_up() {
        let mut total = TokenUsage::default();
        total.add(TokenUsage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
        });
        total.add(TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 20,
            total_tokens: 30,
        });
        assert_eq!(total.total_tokens, 33);
        assert_eq!(total.prompt_tokens, 11);
    }
}
