//! What the programs built on this library print for their users to copy:
//! paths as shell words, so that a hint naming a directory can be pasted
//! as it is.

use std::path::Path;

/// `path` as a shell word: as is when it needs no quoting, else in single
/// quotes.
pub fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%~".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word(Path::new("/home/a/data")), "/home/a/data");
        assert_eq!(shell_word(Path::new("my data")), "'my data'");
        assert_eq!(shell_word(Path::new("it's")), r"'it'\''s'");
        assert_eq!(shell_word(Path::new("")), "''");
    }
}
