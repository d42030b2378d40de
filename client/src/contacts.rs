//! Contact names: a local address book mapping a name to an account id.

use comptoir_protocol::AccountId;

use crate::error::{ClientError, Result};
use crate::store::{Store, Tree};

/// Longest contact name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// One address-book entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The name the user gave.
    pub name: String,
    /// The account it names.
    pub account: AccountId,
}

/// Check a contact name: 1 to [`MAX_NAME_LEN`] bytes, no control
/// characters, not shaped like an account id.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ClientError::InvalidArgument(format!(
            "a contact name is 1 to {MAX_NAME_LEN} bytes without control characters"
        )));
    }
    if AccountId::from_hex(name).is_ok() {
        return Err(ClientError::InvalidArgument(
            "a contact name must not look like an account id".into(),
        ));
    }
    Ok(())
}

/// What [`add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// The name is new.
    New,
    /// The name already named this account.
    Unchanged,
    /// The name named another account, replaced on request.
    Replaced {
        /// The account the name named before.
        previous: AccountId,
    },
}

/// Give `account` the name `name`. A name that already names another
/// account is [`ClientError::ContactExists`] (nothing changes) unless
/// `replace` says to re-point it.
pub fn add(store: &Store, name: &str, account: AccountId, replace: bool) -> Result<Added> {
    check_name(name)?;
    let added = match get(store, name)? {
        None => Added::New,
        Some(same) if same == account => return Ok(Added::Unchanged),
        Some(previous) if replace => Added::Replaced { previous },
        Some(previous) => {
            return Err(ClientError::ContactExists {
                name: name.to_string(),
                account: previous,
            });
        }
    };
    store.put(Tree::Contacts, name.as_bytes(), account.as_bytes())?;
    Ok(added)
}

/// Forget the name `name`; returns the account it named
/// ([`ClientError::UnknownContact`] if none).
pub fn remove(store: &Store, name: &str) -> Result<AccountId> {
    let account = get(store, name)?.ok_or_else(|| ClientError::UnknownContact(name.into()))?;
    store.remove(Tree::Contacts, name.as_bytes())?;
    Ok(account)
}

/// Rename the contact `old` to `new`, which must be free
/// ([`ClientError::ContactExists`] otherwise); returns the account.
pub fn rename(store: &Store, old: &str, new: &str) -> Result<AccountId> {
    check_name(new)?;
    let account = get(store, old)?.ok_or_else(|| ClientError::UnknownContact(old.into()))?;
    if old == new {
        return Ok(account);
    }
    if let Some(taken) = get(store, new)? {
        return Err(ClientError::ContactExists {
            name: new.to_string(),
            account: taken,
        });
    }
    // The new name first: a crash in between leaves two names, never none.
    store.put(Tree::Contacts, new.as_bytes(), account.as_bytes())?;
    store.remove(Tree::Contacts, old.as_bytes())?;
    Ok(account)
}

fn get(store: &Store, name: &str) -> Result<Option<AccountId>> {
    store
        .get(Tree::Contacts, name.as_bytes())?
        .map(|bytes| AccountId::from_bytes(&bytes).map_err(ClientError::from))
        .transpose()
}

/// Every contact, by name.
pub fn list(store: &Store) -> Result<Vec<Contact>> {
    store
        .scan(Tree::Contacts, &[])?
        .into_iter()
        .map(|(key, value)| {
            let name = String::from_utf8(key)
                .map_err(|_| ClientError::CorruptStore("contact name is not UTF-8".into()))?;
            Ok(Contact {
                name,
                account: AccountId::from_bytes(&value)?,
            })
        })
        .collect()
}

/// The name the user gave an account, if any.
pub fn name_of(store: &Store, account: &AccountId) -> Result<Option<String>> {
    Ok(list(store)?
        .into_iter()
        .find(|c| c.account == *account)
        .map(|c| c.name))
}

/// Resolve a contact name or a 32-character hex account id.
pub fn resolve(store: &Store, name_or_id: &str) -> Result<AccountId> {
    if let Ok(id) = AccountId::from_hex(name_or_id) {
        return Ok(id);
    }
    match store.get(Tree::Contacts, name_or_id.as_bytes())? {
        Some(bytes) => Ok(AccountId::from_bytes(&bytes)?),
        None => Err(ClientError::UnknownContact(name_or_id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KdfParams;

    /// A name is never re-pointed or lost by accident: each refusal is a
    /// typed error that leaves the address book as it was.
    #[test]
    fn names_are_not_re_pointed_or_lost_by_accident() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let store = Store::create(dir.path(), "pw-long-enough", params)?;
        let mut rng = rand::rng();
        let (bob, carol) = (AccountId::generate(&mut rng), AccountId::generate(&mut rng));
        let book = |store: &Store| -> Result<Vec<(String, AccountId)>> {
            Ok(list(store)?
                .into_iter()
                .map(|c| (c.name, c.account))
                .collect())
        };

        assert_eq!(add(&store, "bob", bob, false)?, Added::New);
        assert_eq!(add(&store, "bob", bob, false)?, Added::Unchanged);
        assert!(matches!(
            add(&store, "bob", carol, false),
            Err(ClientError::ContactExists { account, .. }) if account == bob
        ));
        assert_eq!(book(&store)?, vec![("bob".into(), bob)]);
        assert_eq!(
            add(&store, "bob", carol, true)?,
            Added::Replaced { previous: bob }
        );
        add(&store, "robert", bob, false)?;

        assert!(matches!(
            rename(&store, "bob", "robert"),
            Err(ClientError::ContactExists { .. })
        ));
        assert!(matches!(
            rename(&store, "nobody", "x"),
            Err(ClientError::UnknownContact(_))
        ));
        assert!(matches!(
            rename(&store, "bob", ""),
            Err(ClientError::InvalidArgument(_))
        ));
        assert_eq!(
            book(&store)?,
            vec![("bob".into(), carol), ("robert".into(), bob)]
        );
        assert_eq!(rename(&store, "bob", "carol")?, carol);
        assert_eq!(remove(&store, "robert")?, bob);
        assert!(matches!(
            remove(&store, "robert"),
            Err(ClientError::UnknownContact(_))
        ));
        assert_eq!(book(&store)?, vec![("carol".into(), carol)]);
        Ok(())
    }
}
