//! Confusable names (Unicode Technical Standard #39, "Confusable
//! Detection"): a verified business's name is reserved, and so is every
//! name that looks like it. Two names are confusable when their
//! [`skeleton`]s are equal; the relay keeps the skeletons of reserved
//! names and refuses a claim or a profile whose skeleton is among them.
//!
//! The UTS #39 skeleton itself comes from the `unicode-security` crate
//! (NFD, default-ignorable code points removed, each character replaced by
//! its prototype from the Unicode confusables table, NFD again). It is
//! case-sensitive, and a business name is not: so [`skeleton`] folds it
//! further (see there). The folding only ever merges skeletons, so two
//! names with the same UTS #39 skeleton always have the same
//! [`skeleton`].

use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton as uts39_skeleton;

/// The UTS #39 skeleton of `name` as the standard defines it
/// (case-sensitive): `"paypa1"` gives `"paypal"`, `"m"` gives `"rn"`.
pub fn uts39(name: &str) -> String {
    uts39_skeleton(name).collect()
}

/// The key two names are compared by: equal keys mean confusable names.
///
/// `skeleton(x) = ws(lower(S(lower(NFKC(S(x))))))`, where `S` is the UTS #39
/// skeleton ([`uts39`]), `NFKC` the compatibility normalisation (so
/// compatibility forms the confusables table does not list fold too),
/// `lower` Rust's full Unicode lowercase mapping (names are
/// case-insensitive: `ACME` is `acme`), applied before a second `S` so that
/// lowercase letters that only look like others (Greek `α`, Cyrillic `а`)
/// map too, and `ws` trims white space and makes each run of it one space.
///
/// Examples: `Acme`, `ACME`, `Αcme` (Greek capital alpha), `аcmе`
/// (Cyrillic а and е), `Ａｃｍｅ` (full width) and `Ac\u{200B}me` (a zero
/// width space) all give `acrne` (the prototype of `m` is `rn`); `paypa1`
/// and `PayPaI` give `paypal`; `modern` and `rnodern` are confusable.
/// `Acme` and `Acne` stay distinct, and so do `Acme` and `Acmé`: UTS #39
/// keeps combining marks, and so does this skeleton.
pub fn skeleton(name: &str) -> String {
    let first: String = uts39_skeleton(name)
        .nfkc()
        .flat_map(char::to_lowercase)
        .collect();
    let second: String = uts39_skeleton(&first)
        .flat_map(char::to_lowercase)
        .collect();
    second.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether two names are confusable: their [`skeleton`]s are equal.
pub fn are_confusable(a: &str, b: &str) -> bool {
    skeleton(a) == skeleton(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalikes_are_confusable() {
        for (a, b) in [
            ("Acme", "Αcme"),                         // Greek capital alpha
            ("acme", "αcme"),                         // Greek small alpha
            ("Acme", "ACME"),                         // case
            ("acme", "\u{430}cm\u{435}"),             // Cyrillic а, е
            ("ACME", "\u{410}\u{421}\u{41C}\u{415}"), // Cyrillic А, С, М, Е
            ("Acme", "Ａｃｍｅ"),                     // full width
            ("Acme", "Ac\u{200B}me"),                 // zero width space
            ("paypal", "paypa1"),                     // digit one
            ("paypal", "PayPaI"),                     // capital I
            ("modern", "rnodern"),                    // m and rn
            ("Acme Air", "  Acme   Air "),
            ("apple", "\u{430}pple"), // Cyrillic а
            ("google", "g00gle"),     // zeros
        ] {
            assert!(
                are_confusable(a, b),
                "{a:?} {b:?}: {:?} {:?}",
                skeleton(a),
                skeleton(b)
            );
            assert!(are_confusable(b, a));
        }
        assert_eq!(uts39("paypa1"), "paypal");
        assert_eq!(uts39("m"), "rn");
        assert_eq!(skeleton("Αcme"), "acrne");
    }

    #[test]
    fn distinct_names_stay_distinct() {
        for (a, b) in [
            ("Acme", "Acne"),
            ("Acme Air", "Acme Bank"),
            ("Acme Air", "AcmeAir"),
            ("paypal", "paypat"),
            ("boots", "roots"),
            ("Café Nord", "Café Sud"),
            ("Acme", "Acme\u{301}"), // an accent is kept (UTS #39)
            ("東京", "京都"),
        ] {
            assert!(!are_confusable(a, b), "{a:?} {b:?}: {:?}", skeleton(a));
        }
    }

    #[test]
    fn a_uts39_match_is_always_a_match() {
        // The folding only merges: same UTS #39 skeleton, same skeleton.
        for (a, b) in [("Αcme", "Acme"), ("paypa1", "paypal"), ("m", "rn")] {
            assert_eq!(uts39(a), uts39(b));
            assert!(are_confusable(a, b));
        }
    }
}
