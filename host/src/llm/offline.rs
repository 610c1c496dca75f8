//! The offline model: the provider used when no model server is configured. It needs no network,
//! costs nothing, and writes deterministic text, which makes demos and tests reproducible.

use super::{ChatError, ChatModel, ChatRequest, ChatResponse, Role, Usage};
use async_trait::async_trait;

const PROVIDER: &str = "offline";

/// Model name reported when neither the request nor the settings name one.
const DEFAULT_MODEL: &str = "offline";

/// Marker at the start of every reply, so that a reader can tell it from a real model's text.
pub const OFFLINE_MARKER: &str = "[offline model]";

/// Sentence templates; `{topic}` is replaced by the subject of the request.
const SENTENCES: [&str; 10] = [
    "On {topic}, the strongest case rests on what it costs and who pays.",
    "Whatever one thinks of {topic}, the evidence so far is mixed.",
    "The debate about {topic} often skips the people it affects most.",
    "A fair view of {topic} weighs short-term gains against long-term risks.",
    "Critics of {topic} raise points that deserve a direct answer.",
    "Supporters of {topic} point to results that are hard to dismiss.",
    "Any decision on {topic} should be tested on a small scale first.",
    "The disagreement about {topic} is more about values than about facts.",
    "Clear goals would make {topic} much easier to judge.",
    "Both sides of {topic} agree on more than their rhetoric suggests.",
];

/// How many sentences a reply has at most.
const SENTENCES_PER_REPLY: usize = 3;

/// Maximum length of the subject quoted from the request, in words.
const MAX_TOPIC_WORDS: usize = 12;

/// Deterministic stand-in for a language model.
///
/// The reply is [`OFFLINE_MARKER`] followed by sentences chosen by a hash of the whole request,
/// each quoting its subject: the text after `Debate topic:` in the last user message, or else
/// that message's first line. Token counts are word counts. The same request always gets the same
/// reply, on every platform and Rust version.
#[derive(Debug, Clone, Default)]
pub struct OfflineModel {
    default_model: Option<String>,
}

impl OfflineModel {
    /// Creates the model; `default_model` is the name reported when a request names none.
    pub fn new(default_model: Option<String>) -> Self {
        OfflineModel { default_model }
    }

    /// Writes the reply to `request`.
    pub fn reply(&self, request: &ChatRequest) -> ChatResponse {
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let topic = subject_of(last_user);

        // Choose distinct sentences from a seed of the whole conversation.
        let mut seed = fnv1a(request.messages.iter().flat_map(|m| {
            [role_byte(m.role)]
                .into_iter()
                .chain(m.content.bytes())
                .chain([0])
        }));
        let mut chosen: Vec<usize> = Vec::with_capacity(SENTENCES_PER_REPLY);
        while chosen.len() < SENTENCES_PER_REPLY {
            let index = (seed % SENTENCES.len() as u64) as usize;
            if !chosen.contains(&index) {
                chosen.push(index);
            }
            seed = splitmix(seed);
        }
        let mut text = OFFLINE_MARKER.to_string();
        for index in chosen {
            text.push(' ');
            text.push_str(&SENTENCES[index].replace("{topic}", &topic));
        }

        // Keep within `max_tokens`, counting a word as a token.
        if let Some(max_tokens) = request.max_tokens {
            let max_words = usize::try_from(max_tokens).unwrap_or(usize::MAX).max(2);
            if word_count(&text) > max_words {
                text = text
                    .split_whitespace()
                    .take(max_words)
                    .collect::<Vec<_>>()
                    .join(" ");
            }
        }

        let prompt_tokens = request
            .messages
            .iter()
            .map(|m| word_count(&m.content))
            .sum::<usize>();
        let prompt_tokens = u32::try_from(prompt_tokens).unwrap_or(u32::MAX);
        let completion_tokens = u32::try_from(word_count(&text)).unwrap_or(u32::MAX);
        ChatResponse {
            text,
            model: request
                .model
                .clone()
                .or_else(|| self.default_model.clone())
                .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
            usage: Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens.saturating_add(completion_tokens),
            },
            provider: PROVIDER.to_string(),
        }
    }
}

#[async_trait]
impl ChatModel for OfflineModel {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ChatError> {
        Ok(self.reply(&request))
    }

    fn provider(&self) -> &str {
        PROVIDER
    }
}

/// Returns the subject to quote: the rest of a `Debate topic:` line, else the first non-blank
/// line, cut to [`MAX_TOPIC_WORDS`] words and stripped of final punctuation.
fn subject_of(message: &str) -> String {
    let line = message
        .lines()
        .find_map(|line| line.trim().strip_prefix("Debate topic:"))
        .or_else(|| message.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().take(MAX_TOPIC_WORDS).collect();
    let subject = words.join(" ");
    let subject = subject.trim_end_matches(['.', '?', '!', ':']);
    if subject.is_empty() {
        "this question".to_string()
    } else {
        format!("\"{subject}\"")
    }
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::System => b's',
        Role::User => b'u',
        Role::Assistant => b'a',
    }
}

/// 64-bit FNV-1a, chosen because its output is fixed by its definition (std's `DefaultHasher`
/// may change between Rust releases).
fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One step of the SplitMix64 generator, to draw further choices from one seed.
fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
