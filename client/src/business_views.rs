//! The last checked view of each business ([`crate::Client::business`]):
//! whether it was shown as verified and by which certified name, and its
//! profile, so that screens that work offline (`history`) show the mark
//! as it was last checked. A verified view is kept with its certificate's
//! expiry and reads as expired after it; a revocation is learned only at
//! the next check.
//!
//! Records (sealed in the [`Store`]): tree `BusinessViews` by account id
//! (16): a JSON object `{"version": 1, "profile": <profile JSON> | null,
//! "verified_name": string | null, "not_verified": reason code | null,
//! "valid_until_ms": u64, "checked_at_ms": u64}`.

use comptoir_protocol::AccountId;
use comptoir_protocol::business::{BusinessProfile, NotVerified, Verification};
use serde_json::{Value, json};

use crate::client::BusinessView;
use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

const VERSION: u64 = 1;

fn reason_code(reason: NotVerified) -> &'static str {
    match reason {
        NotVerified::BadSignature => "bad_signature",
        NotVerified::OtherAccountKey => "other_account_key",
        NotVerified::Revoked => "revoked",
        NotVerified::NotYetValid => "not_yet_valid",
        NotVerified::Expired => "expired",
        NotVerified::ProfileMismatch => "profile_mismatch",
        NotVerified::NoOperatorKey => "no_operator_key",
        _ => "no_certificate",
    }
}

fn reason_of(code: &str) -> NotVerified {
    match code {
        "bad_signature" => NotVerified::BadSignature,
        "other_account_key" => NotVerified::OtherAccountKey,
        "revoked" => NotVerified::Revoked,
        "not_yet_valid" => NotVerified::NotYetValid,
        "expired" => NotVerified::Expired,
        "profile_mismatch" => NotVerified::ProfileMismatch,
        "no_operator_key" => NotVerified::NoOperatorKey,
        _ => NotVerified::NoCertificate,
    }
}

/// Keep `view`, checked at `checked_at_ms`; a verified view counts until
/// `valid_until_ms` (its certificate's expiry).
pub fn save(
    store: &Store,
    view: &BusinessView,
    valid_until_ms: u64,
    checked_at_ms: u64,
) -> Result<()> {
    let (verified_name, not_verified) = match &view.verification {
        Verification::Verified { display_name } => (Some(display_name.clone()), None),
        Verification::NotVerified(reason) => (None, Some(reason_code(*reason))),
    };
    let profile = match &view.profile {
        Some(profile) => serde_json::to_value(profile)
            .map_err(|_| ClientError::InvalidArgument("the profile cannot be kept".into()))?,
        None => Value::Null,
    };
    let record = json!({
        "version": VERSION,
        "profile": profile,
        "verified_name": verified_name,
        "not_verified": not_verified,
        "valid_until_ms": valid_until_ms,
        "checked_at_ms": checked_at_ms,
    });
    store.put(
        Tree::BusinessViews,
        view.account.as_bytes(),
        record.to_string().as_bytes(),
    )
}

/// The view of `account` last checked, as it stands at `now_ms` (a
/// verified view past its certificate's expiry reads as expired).
pub fn load(store: &Store, account: &AccountId, now_ms: u64) -> Result<Option<BusinessView>> {
    let Some(bytes) = store.get(Tree::BusinessViews, account.as_bytes())? else {
        return Ok(None);
    };
    let corrupt = || ClientError::CorruptStore("a business view".into());
    let record: Value = serde_json::from_slice(&bytes).map_err(|_| corrupt())?;
    if record["version"].as_u64() != Some(VERSION) {
        return Err(corrupt());
    }
    let profile = match &record["profile"] {
        Value::Null => None,
        value => {
            Some(serde_json::from_value::<BusinessProfile>(value.clone()).map_err(|_| corrupt())?)
        }
    };
    let valid_until = record["valid_until_ms"].as_u64().ok_or_else(corrupt)?;
    let verification = match record["verified_name"].as_str() {
        Some(_) if now_ms >= valid_until => Verification::NotVerified(NotVerified::Expired),
        Some(name) => Verification::Verified {
            display_name: name.to_owned(),
        },
        None => Verification::NotVerified(reason_of(
            record["not_verified"].as_str().unwrap_or_default(),
        )),
    };
    Ok(Some(BusinessView {
        account: *account,
        profile,
        verification,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Reason: test code fails by panicking.
    use super::*;
    use crate::store::FAST_TEST_KDF;

    #[test]
    fn a_verified_view_reads_as_expired_after_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), "passphrase", FAST_TEST_KDF).unwrap();
        let acme = AccountId::from_bytes(&[7; 16]).unwrap();
        assert_eq!(load(&store, &acme, 10).unwrap(), None);
        let view = BusinessView {
            account: acme,
            profile: None,
            verification: Verification::Verified {
                display_name: "Acme Air".into(),
            },
        };
        save(&store, &view, 1_000, 10).unwrap();
        assert_eq!(load(&store, &acme, 999).unwrap(), Some(view.clone()));
        assert_eq!(
            load(&store, &acme, 1_000).unwrap().map(|v| v.verification),
            Some(Verification::NotVerified(NotVerified::Expired))
        );
        let revoked = BusinessView {
            verification: Verification::NotVerified(NotVerified::Revoked),
            ..view
        };
        save(&store, &revoked, 0, 20).unwrap();
        assert_eq!(load(&store, &acme, 21).unwrap(), Some(revoked));
    }
}
