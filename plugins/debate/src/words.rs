//! Word counting and trimming. A word is a run of non-whitespace characters, as
//! `str::split_whitespace` defines it.

/// Marker appended to a text cut short.
pub const ELLIPSIS: &str = "…";

/// Counts the words in `text`.
#[cfg(test)]
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Returns `text` without surrounding whitespace, cut after its `max_words`-th word with
/// [`ELLIPSIS`] appended when it is longer. Whitespace inside the kept part, such as paragraph
/// breaks, is kept as it was.
pub fn trim_to_words(text: &str, max_words: usize) -> String {
    let text = text.trim();
    let mut words = 0;
    let mut in_word = false;
    for (offset, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word && words == max_words {
                return format!("{}{ELLIPSIS}", &text[..offset]);
            }
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
            if words > max_words {
                // `max_words` is 0: nothing of the text is kept.
                return ELLIPSIS.to_string();
            }
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        assert_eq!(trim_to_words("  one two\n\nthree ", 3), "one two\n\nthree");
    }

    #[test]
    fn long_text_is_cut_after_limit() {
        assert_eq!(trim_to_words("one two three four", 2), "one two…");
    }

    #[test]
    fn cut_keeps_inner_line_breaks() {
        assert_eq!(trim_to_words("one\n\ntwo three", 2), "one\n\ntwo…");
    }

    #[test]
    fn cut_text_has_limit_words() {
        let text = "word ".repeat(500);
        let trimmed = trim_to_words(&text, 150);
        assert_eq!(count_words(&trimmed), 150);
        assert!(trimmed.ends_with(ELLIPSIS));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundary() {
        assert_eq!(trim_to_words("héllo wörld ünd mehr", 2), "héllo wörld…");
    }

    #[test]
    fn zero_limit_keeps_nothing() {
        assert_eq!(trim_to_words("one", 0), ELLIPSIS);
    }

    #[test]
    fn empty_text_stays_empty() {
        assert_eq!(trim_to_words("   ", 5), "");
    }
}
