//! Confusable names (Unicode Technical Standard #39, "Confusable
//! Detection"): a verified business's name is reserved, and so is every
//! name that looks like it ([`are_confusable`]). For reservation the relay
//! keeps the coarser [`reservation_keys`] of each verified name
//! (separators and accents dropped too) and refuses a handle claim or a
//! profile name that shares one of them ([`is_reserved_by`]).
//!
//! The UTS #39 skeleton itself comes from the `unicode-security` crate
//! (NFD, default-ignorable code points removed, each character replaced by
//! its prototype from the Unicode confusables table, NFD again). It is
//! case-sensitive, and a business name is not. Case and shape pull apart
//! on one letter: the skeleton of capital `I` is `l` (they look alike),
//! while case makes `I` an `i`. One key cannot honour both without making
//! `i` and `l` the same, so names are compared under two keys and are
//! confusable when either matches:
//! - [`skeleton`], shape first: the UTS #39 skeleton, then case folded
//!   (`PayPaI` is `paypal`; `АСМЕ` in Cyrillic capitals is `ACME`);
//! - [`folded_skeleton`], case first: case folded, then the UTS #39
//!   skeleton (`ACME AIR` is `Acme Air`).
//!
//! Both only ever merge UTS #39 skeletons: two names with the same UTS #39
//! skeleton always have the same [`skeleton`].

use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton as uts39_skeleton;

/// The UTS #39 skeleton of `name` as the standard defines it
/// (case-sensitive): `"paypa1"` gives `"paypal"`, `"m"` gives `"rn"`.
pub fn uts39(name: &str) -> String {
    uts39_skeleton(name).collect()
}

/// Lowercase (Rust's full Unicode mapping) and make white space single
/// spaces, trimmed.
fn lower_ws(chars: impl Iterator<Item = char>) -> String {
    let lowered: String = chars.flat_map(char::to_lowercase).collect();
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The shape-first key: `lower(S(lower(NFKC(S(x)))))`, white space
/// trimmed and each run of it one space, where `S` is the UTS #39
/// skeleton ([`uts39`]), `NFKC` the compatibility normalisation (so forms
/// the confusables table does not list fold too) and `lower` the full
/// Unicode lowercase mapping; the second `S` maps lowercase letters that
/// only look like others (Greek `α`, Cyrillic `а`).
///
/// `Acme`, `ACME`, `Αcme` (Greek capital alpha), `аcmе` (Cyrillic а and
/// е), `АСМЕ` (Cyrillic capitals), `Ａｃｍｅ` (full width) and `Ac\u{200B}me`
/// (a zero width space) all give `acrne` (the prototype of `m` is `rn`);
/// `paypa1` and `PayPaI` give `paypal`. `Acme` and `Acne` stay distinct,
/// and so do `Acme` and `Acmé`: UTS #39 keeps combining marks.
pub fn skeleton(name: &str) -> String {
    let first: String = uts39_skeleton(name)
        .nfkc()
        .flat_map(char::to_lowercase)
        .collect();
    lower_ws(uts39_skeleton(&first))
}

/// The case-first key: `lower(S(lower(NFKC(x))))`, white space as in
/// [`skeleton`]. `ACME AIR` and `Acme Air` give `acrne air` (under
/// [`skeleton`] the capital `I` would be an `l`).
pub fn folded_skeleton(name: &str) -> String {
    let folded: String = name.nfkc().flat_map(char::to_lowercase).collect();
    lower_ws(uts39_skeleton(&folded))
}

/// Whether two names are confusable: their [`skeleton`]s or their
/// [`folded_skeleton`]s are equal.
pub fn are_confusable(a: &str, b: &str) -> bool {
    skeleton(a) == skeleton(b) || folded_skeleton(a) == folded_skeleton(b)
}

/// The two keys under which a verified name is reserved: its [`skeleton`]
/// and its [`folded_skeleton`], each with every character that is not a
/// letter or a digit removed (spaces, hyphens, punctuation, combining
/// accents). Coarser than [`are_confusable`] on purpose: a handle
/// (`acme-air`) or a display name (`AcmeAir`, `Acmé Air`) must not get
/// around the reservation of `Acme Air` by separators or accents. A relay
/// keeps both keys of every verified name (as two separate indexes) and
/// refuses a name one of whose keys is in the index of the same position.
/// A name whose keys are empty has no letter or digit: refuse it rather
/// than compare it.
pub fn reservation_keys(name: &str) -> [String; 2] {
    let strip = |key: String| key.chars().filter(|c| c.is_alphanumeric()).collect();
    [strip(skeleton(name)), strip(folded_skeleton(name))]
}

/// Whether `candidate` may not be claimed because `reserved` (a verified
/// name) reserves it: a key of [`reservation_keys`] is not empty and equal
/// to the same key of `reserved`. Every pair of [`are_confusable`] names
/// with a letter or a digit counts.
pub fn is_reserved_by(candidate: &str, reserved: &str) -> bool {
    let [shape, case] = reservation_keys(candidate);
    let [reserved_shape, reserved_case] = reservation_keys(reserved);
    (!shape.is_empty() && shape == reserved_shape) || (!case.is_empty() && case == reserved_case)
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
            ("Acme Air", "ACME AIR"),                 // case, with an I
            ("paypal", "PAYPAL"),
            ("Acme", "Ａｃｍｅ"),     // full width
            ("Acme", "Ac\u{200B}me"), // zero width space
            ("paypal", "paypa1"),     // digit one
            ("paypal", "PayPaI"),     // capital I
            ("modern", "rnodern"),    // m and rn
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
    fn a_verified_name_reserves_handles_and_lookalikes() {
        for candidate in [
            "acme-air",
            "ACME AIR",
            "AcmeAir",
            "Acmé Air",
            "Αcme_Αir",
            "acrne.air",
            "Acme Air!",
        ] {
            assert!(is_reserved_by(candidate, "Acme Air"), "{candidate:?}");
        }
        for candidate in ["acme-bank", "Acne Air", "Acme Airways", "air-acme"] {
            assert!(!is_reserved_by(candidate, "Acme Air"), "{candidate:?}");
        }
        // Confusable names (with a letter or digit) are always reserved.
        for (a, b) in [("paypal", "paypa1"), ("Acme", "Ａｃｍｅ")] {
            assert!(are_confusable(a, b) && is_reserved_by(a, b));
        }
        assert_eq!(reservation_keys("--"), [String::new(), String::new()]);
        assert!(!is_reserved_by("--", "..."));
    }

    #[test]
    fn the_documented_examples_hold() {
        for name in [
            "Acme",
            "ACME",
            "Αcme",
            "\u{430}cm\u{435}",
            "\u{410}\u{421}\u{41C}\u{415}",
            "Ａｃｍｅ",
            "Ac\u{200B}me",
        ] {
            assert_eq!(skeleton(name), "acrne", "{name:?}");
        }
        assert_eq!(skeleton("paypa1"), "paypal");
        assert_eq!(skeleton("PayPaI"), "paypal");
        assert_ne!(skeleton("Acme"), skeleton("Acmé"));
        assert_eq!(folded_skeleton("ACME AIR"), "acrne air");
        assert_eq!(folded_skeleton("Acme Air"), "acrne air");
        assert_ne!(skeleton("ACME AIR"), skeleton("Acme Air"));
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
