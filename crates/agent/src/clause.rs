//! From streamed model text to speakable pieces. [`ClauseSplitter`] takes the answer's deltas
//! as they come and hands out text to synthesise: the first piece of an answer at its first
//! clause boundary (a comma, colon, semicolon or dash after a few words) so the first audio
//! leaves early, later pieces at sentence ends (better prosody), and the rest when the answer
//! ends. Markdown the model may write (`**bold**`, `# headings`, `- bullets`, `` `code` ``,
//! `[links](…)`) is stripped: it would be read out.

/// Fewest words before a clause boundary may end the first piece.
const FIRST_PIECE_MIN_WORDS: usize = 3;
/// A piece longer than this is cut at the last space even without a boundary.
const MAX_PIECE_CHARS: usize = 400;

/// Splits streamed text into speakable pieces.
#[derive(Debug, Default)]
pub struct ClauseSplitter {
    /// Text received and not yet handed out.
    pending: String,
    /// Pieces handed out so far.
    pieces: usize,
    /// Inside a fenced code block (its lines are not read).
    in_fence: bool,
    /// The start of a line not yet seen whole (markdown line prefixes are judged per line).
    at_line_start: bool,
    /// Backticks opening the current line (three open or close a fence).
    line_ticks: usize,
    /// A `-`, `*` or `+` opening the current line, held until the next character shows
    /// whether it is a bullet (a space follows) or part of the text (`-5 degrees`, `+1 555`).
    marker: Option<char>,
}

impl ClauseSplitter {
    /// A splitter at the start of an answer.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            ..Self::default()
        }
    }

    /// Takes the next delta; returns the pieces it completed, in order.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        for c in delta.chars() {
            self.take(c);
        }
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let piece: String = self.pending.drain(..end).collect();
            if let Some(piece) = speakable(&piece) {
                self.pieces += 1;
                out.push(piece);
            }
        }
        out
    }

    /// The answer ended: whatever is left.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        self.in_fence = false;
        self.marker = None;
        self.at_line_start = true;
        let piece = speakable(&rest)?;
        self.pieces += 1;
        Some(piece)
    }

    /// Adds one character, dropping markdown syntax on the way.
    fn take(&mut self, c: char) {
        if let Some(marker) = self.marker.take()
            && !c.is_whitespace()
        {
            // Not a bullet: the sign is said (emphasis stars are dropped below).
            self.at_line_start = false;
            if !self.in_fence && marker != '*' {
                self.pending.push(marker);
            }
        }
        if c == '\n' {
            self.at_line_start = true;
            self.line_ticks = 0;
            if !self.in_fence {
                self.pending.push('\n');
            }
            return;
        }
        if self.at_line_start {
            // Line prefixes are decided on the line's first characters: `#`, `>`, bullets and
            // fences. They are dropped as they come; the rest of the line is kept.
            if c == '`' {
                self.line_ticks += 1;
                if self.line_ticks == 3 {
                    self.in_fence = !self.in_fence;
                }
                return;
            }
            if matches!(c, '#' | '>') {
                return;
            }
            if matches!(c, '-' | '*' | '+') && self.line_so_far().trim().is_empty() {
                self.marker = Some(c);
                return;
            }
            if !c.is_whitespace() {
                self.at_line_start = false;
            }
        }
        if self.in_fence {
            return;
        }
        match c {
            '*' | '_' | '`' | '~' => {}
            _ => self.pending.push(c),
        }
    }

    /// The current line's text so far.
    fn line_so_far(&self) -> &str {
        self.pending
            .rsplit_once('\n')
            .map_or(self.pending.as_str(), |(_, line)| line)
    }

    /// Where the next piece ends in `pending`, when one is complete.
    fn boundary(&self) -> Option<usize> {
        let text = &self.pending;
        let mut words = 0;
        let mut previous_space = true;
        let mut iter = text.char_indices().peekable();
        while let Some((i, c)) = iter.next() {
            if c.is_whitespace() {
                previous_space = true;
                if c == '\n' && words > 0 {
                    return Some(i + 1);
                }
                continue;
            }
            if previous_space {
                words += 1;
                previous_space = false;
            }
            // A boundary counts once the next character shows it is not inside a number
            // ("3.5", "1,000") or an abbreviation's dot run.
            let Some(&(_, next)) = iter.peek() else {
                break;
            };
            if !next.is_whitespace() {
                continue;
            }
            let sentence_end = matches!(c, '.' | '!' | '?' | '…');
            let clause_end = matches!(c, ',' | ';' | ':' | '—' | '–');
            if sentence_end && words >= 1 {
                return Some(i + c.len_utf8());
            }
            if clause_end && self.pieces == 0 && words >= FIRST_PIECE_MIN_WORDS {
                return Some(i + c.len_utf8());
            }
        }
        if text.len() > MAX_PIECE_CHARS {
            let cut = text
                .get(..MAX_PIECE_CHARS)
                .and_then(|head| head.rfind(' '))
                .unwrap_or(MAX_PIECE_CHARS);
            let mut cut = cut.max(1);
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            return Some(cut);
        }
        None
    }
}

/// `piece` as it is spoken: links reduced to their text, whitespace collapsed; `None` when
/// nothing is left to say.
fn speakable(piece: &str) -> Option<String> {
    let mut text = String::with_capacity(piece.len());
    let mut rest = piece;
    // `[text](target)` → `text`.
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        text.push_str(before);
        let link = after
            .find("](")
            .and_then(|close| Some((close, after.get(close..)?.find(')')? + close)));
        match link {
            Some((close, end)) => {
                text.push_str(after.get(1..close).unwrap_or_default());
                rest = after.get(end + 1..).unwrap_or_default();
            }
            None => {
                text.push('[');
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
    text.push_str(rest);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed
        .chars()
        .any(char::is_alphanumeric)
        .then_some(collapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(deltas: &[&str]) -> Vec<String> {
        let mut s = ClauseSplitter::new();
        let mut out: Vec<String> = deltas.iter().flat_map(|d| s.push(d)).collect();
        out.extend(s.finish());
        out
    }

    #[test]
    fn the_first_piece_ends_at_the_first_clause_then_sentences() {
        assert_eq!(
            split(&[
                "Hi there Sam, this is Ava",
                " from Acme. Do you have",
                " a minute? Great"
            ]),
            [
                "Hi there Sam,",
                "this is Ava from Acme.",
                "Do you have a minute?",
                "Great"
            ]
        );
    }

    #[test]
    fn a_short_opening_clause_waits_for_more_words() {
        assert_eq!(split(&["Yes, of course. Bye"]), ["Yes, of course.", "Bye"]);
    }

    #[test]
    fn numbers_and_abbreviations_inside_words_do_not_split() {
        assert_eq!(
            split(&["It costs 3.50 dollars, or 1,000 cents in total."]),
            ["It costs 3.50 dollars,", "or 1,000 cents in total."]
        );
    }

    #[test]
    fn markdown_is_not_read_out() {
        assert_eq!(
            split(&[
                "# Options\n- **Gold** plan\n- `Silver` plan\nSee [our site](https://x.example).\n"
            ]),
            ["Options", "Gold plan", "Silver plan", "See our site."]
        );
    }

    #[test]
    fn only_a_sign_followed_by_a_space_is_a_bullet() {
        assert_eq!(
            split(&[
                "It is -5 degrees.\n",
                "-5 at night.\n+1 555 0100 is the number.\n"
            ]),
            [
                "It is -5 degrees.",
                "-5 at night.",
                "+1 555 0100 is the number."
            ]
        );
        assert_eq!(
            split(&["-", "4 here.\n+", " one bullet\n*", "*Bold** text.\n-\n"]),
            ["-4 here.", "one bullet", "Bold text."]
        );
    }

    #[test]
    fn fenced_code_is_skipped() {
        assert_eq!(
            split(&["Here:\n```\nlet x = 1;\n```\nDone."]),
            ["Here:", "Done."]
        );
    }

    #[test]
    fn a_long_run_without_punctuation_is_cut_at_a_space() {
        let words = "word ".repeat(200);
        let pieces = split(&[&words]);
        assert!(pieces.len() >= 2);
        assert!(pieces.iter().all(|p| p.len() <= MAX_PIECE_CHARS));
        assert_eq!(pieces.join(" ").split(' ').count(), 200);
    }

    #[test]
    fn nothing_speakable_gives_nothing() {
        assert!(split(&["  **  ", "\n\n"]).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_the_deltas_gives_the_same_words(text in "[a-zA-Z ,.!?0-9\n]{0,300}", cuts in proptest::collection::vec(0usize..300, 0..10)) {
            let whole = split(&[&text]);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= text.len()).collect();
            cuts.sort_unstable();
            let mut deltas = Vec::new();
            let mut last = 0;
            for c in cuts {
                deltas.push(&text[last..c]);
                last = c;
            }
            deltas.push(&text[last..]);
            let pieces = split(&deltas);
            let words = |p: &[String]| p.join(" ").split_whitespace().map(str::to_owned).collect::<Vec<_>>();
            proptest::prop_assert_eq!(words(&pieces), words(&whole));
        }
    }
}
