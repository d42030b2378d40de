//! A JSON parse error described for whoever sent the JSON: where and what,
//! without the Rust type names serde puts in its messages ("expected
//! struct Template", "internally tagged enum Parameter").

/// Words after which serde names a Rust type in an error message.
const TYPE_WORDS: [&str; 2] = ["struct ", "enum "];

/// The Rust primitive types serde names after "expected", in words.
const PRIMITIVES: [(&str, &str); 15] = [
    ("u8", "a whole number from 0 to 255"),
    ("u16", "a whole number from 0 to 65535"),
    ("u32", "a whole number from 0 to 4294967295"),
    ("u64", "a whole number, 0 or more"),
    ("u128", "a whole number, 0 or more"),
    ("usize", "a whole number, 0 or more"),
    ("i8", "a whole number from -128 to 127"),
    ("i16", "a whole number from -32768 to 32767"),
    ("i32", "a whole number from -2147483648 to 2147483647"),
    ("i64", "a whole number"),
    ("i128", "a whole number"),
    ("isize", "a whole number"),
    ("f32", "a number"),
    ("f64", "a number"),
    ("char", "a single character"),
];

/// `text` with each "expected <primitive type>" said in words.
fn primitives_in_words(text: &str) -> String {
    const EXPECTED: &str = "expected ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(EXPECTED) {
        let after = at + EXPECTED.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let word_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        if let Some((_, words)) = PRIMITIVES
            .iter()
            .find(|(rust, _)| *rust == &rest[..word_len])
        {
            out.push_str(words);
            rest = &rest[word_len..];
        }
    }
    out.push_str(rest);
    out
}

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
    let what = primitives_in_words(&what);
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
        #[serde(default)]
        count: u8,
        #[serde(default)]
        offset: i64,
        #[serde(default)]
        ratio: f64,
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
            (
                r#"{"name": "a", "count": 300}"#,
                "invalid value: integer `300`, expected a whole number from 0 to 255",
            ),
            (
                r#"{"name": "a", "offset": "x"}"#,
                "invalid type: string \"x\", expected a whole number at line",
            ),
            (
                r#"{"name": "a", "ratio": true}"#,
                "invalid type: boolean `true`, expected a number at line",
            ),
        ];
        for (json, wanted) in cases {
            let said = described(json);
            assert!(said.contains(wanted), "{json}: {said}");
            for rust in [
                "struct",
                "enum ",
                "Secretive",
                "Part",
                "Either",
                "u8",
                "i64",
                "f64",
            ] {
                assert!(!said.contains(rust), "{json}: {said}");
            }
        }
    }
}
