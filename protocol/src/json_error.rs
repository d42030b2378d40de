//! A JSON parse error described for whoever sent the JSON: where and what,
//! without the Rust type names serde puts in its messages ("expected
//! struct Template", "internally tagged enum Parameter").

/// Words after which serde names a Rust type in an error message.
const TYPE_WORDS: [&str; 2] = ["struct ", "enum "];

/// `error` as a sender can read it: serde's own words up to the Rust type
/// it expected (replaced by "another JSON shape"), then where.
pub fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    // serde_json ends its message with the position; it is added back.
    let what = match text.rfind(" at line ") {
        Some(at) if error.line() > 0 => &text[..at],
        _ => text.as_str(),
    };
    let what = match TYPE_WORDS.iter().filter_map(|w| what.find(w)).min() {
        Some(at) => {
            let head = &what[..at];
            // "…, expected [internally tagged] struct X": kept up to
            // "expected"; "data did not match any variant of untagged
            // enum X": said in other words.
            match head.rfind("expected") {
                Some(expected) => format!("{}expected another JSON shape", &head[..expected]),
                None => "the value has none of the accepted JSON shapes".to_owned(),
            }
        }
        None => what.to_owned(),
    };
    if error.line() > 0 {
        format!("{what} at line {} column {}", error.line(), error.column())
    } else {
        what
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Secretive {
        name: String,
        parts: Vec<Part>,
        either: Either,
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Part {
        Body { text: String },
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Either {
        Number(u32),
        Word(String),
    }

    fn described(json: &str) -> String {
        let error = serde_json::from_str::<Secretive>(json).expect_err("refused");
        describe_json_error(&error)
    }

    /// Each kind of refusal says where and what, and names no Rust type.
    #[test]
    fn no_rust_type_is_named_and_the_position_is_kept() {
        let cases = [
            ("[]", "expected another JSON shape at line 1 column"),
            (
                r#"{"name": 1}"#,
                "invalid type: integer `1`, expected a string",
            ),
            (
                r#"{"name": "a", "parts": ["x"], "either": 1}"#,
                "expected another JSON shape at line 1 column",
            ),
            (
                r#"{"name": "a", "parts": [], "either": []}"#,
                "the value has none of the accepted JSON shapes at line 1 column",
            ),
            (r#"{"name": "a", "extra": 1}"#, "unknown field `extra`"),
            (r#"{"name": "a", "parts": []}"#, "missing field `either`"),
            ("{not json", "key must be a string at line 1 column 2"),
        ];
        for (json, wanted) in cases {
            let said = described(json);
            assert!(said.contains(wanted), "{json}: {said}");
            for rust in ["struct", "enum ", "Secretive", "Part", "Either"] {
                assert!(!said.contains(rust), "{json}: {said}");
            }
        }
    }
}
