//! Contact names: a local address book mapping a name to an account id.
//!
//! Each entry is one sealed record (the account id and the name) under a
//! random key, so nothing of a name is readable on disk without the
//! passphrase (the store seals values, not keys). Stores written before kept the
//! name as the key (tree `contacts`); [`migrate`] moves those entries
//! when the store is opened.

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
    let key = find(store, name)?.map_or_else(new_key, |entry| entry.key);
    put(store, &key, name, account)?;
    Ok(added)
}

/// Forget the name `name`; returns the account it named
/// ([`ClientError::UnknownContact`] if none).
pub fn remove(store: &Store, name: &str) -> Result<AccountId> {
    let entry = find(store, name)?.ok_or_else(|| ClientError::UnknownContact(name.into()))?;
    store.remove(Tree::SealedContacts, &entry.key)?;
    Ok(entry.account)
}

/// Rename the contact `old` to `new`, which must be free
/// ([`ClientError::ContactExists`] otherwise); returns the account.
pub fn rename(store: &Store, old: &str, new: &str) -> Result<AccountId> {
    check_name(new)?;
    let entry = find(store, old)?.ok_or_else(|| ClientError::UnknownContact(old.into()))?;
    if old == new {
        return Ok(entry.account);
    }
    if let Some(taken) = find(store, new)? {
        return Err(ClientError::ContactExists {
            name: new.to_string(),
            account: taken.account,
        });
    }
    // One record rewritten: the old name or the new, never none or both.
    put(store, &entry.key, new, entry.account)?;
    Ok(entry.account)
}

/// Length of an entry's random key.
const ENTRY_KEY_LEN: usize = 16;

/// One sealed entry, with the key it is stored under.
struct Entry {
    key: Vec<u8>,
    name: String,
    account: AccountId,
}

fn new_key() -> Vec<u8> {
    let mut key = vec![0u8; ENTRY_KEY_LEN];
    rand::fill(&mut key[..]);
    key
}

/// The record: account id (16 bytes) then the name (UTF-8).
fn put(store: &Store, key: &[u8], name: &str, account: AccountId) -> Result<()> {
    let mut record = zeroize::Zeroizing::new(account.to_vec());
    record.extend_from_slice(name.as_bytes());
    store.put(Tree::SealedContacts, key, &record)
}

fn entries(store: &Store) -> Result<Vec<Entry>> {
    let mut entries = store
        .scan(Tree::SealedContacts, &[])?
        .into_iter()
        .map(|(key, record)| {
            let corrupt = || ClientError::CorruptStore("contact record".into());
            let (account, name) = record.split_at_checked(16).ok_or_else(corrupt)?;
            Ok(Entry {
                key,
                name: String::from_utf8(name.to_vec()).map_err(|_| corrupt())?,
                account: AccountId::from_bytes(account)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn find(store: &Store, name: &str) -> Result<Option<Entry>> {
    Ok(entries(store)?.into_iter().find(|e| e.name == name))
}

fn get(store: &Store, name: &str) -> Result<Option<AccountId>> {
    Ok(find(store, name)?.map(|e| e.account))
}

/// Every contact, by name.
pub fn list(store: &Store) -> Result<Vec<Contact>> {
    Ok(entries(store)?
        .into_iter()
        .map(|e| Contact {
            name: e.name,
            account: e.account,
        })
        .collect())
}

/// Move the entries of a store written before names were sealed (the name
/// as the key of tree `contacts`) into sealed records, then delete them
/// there. Safe to run again after a crash: a name already moved is only
/// deleted from the old tree. Returns how many were moved.
pub fn migrate(store: &Store) -> Result<usize> {
    let old = store.scan(Tree::Contacts, &[])?;
    let mut moved = 0;
    for (name, account) in old {
        let account = AccountId::from_bytes(&account)?;
        let name_text = String::from_utf8(name.clone())
            .map_err(|_| ClientError::CorruptStore("contact name is not UTF-8".into()))?;
        if find(store, &name_text)?.is_none() {
            put(store, &new_key(), &name_text, account)?;
            moved += 1;
        }
        store.remove(Tree::Contacts, &name)?;
    }
    Ok(moved)
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
    get(store, name_or_id)?.ok_or_else(|| ClientError::UnknownContact(name_or_id.to_string()))
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

    /// A store written before names were sealed keeps them as plaintext
    /// keys: opening it moves them into sealed records, and afterwards no
    /// name is a key of any tree.
    #[test]
    fn names_of_an_older_store_are_moved_into_sealed_records() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| ClientError::io("tempdir", e))?;
        let params = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let store = Store::create(dir.path(), "pw-long-enough", params)?;
        let mut rng = rand::rng();
        let (bob, carol) = (AccountId::generate(&mut rng), AccountId::generate(&mut rng));
        // As the previous format wrote them.
        store.put(Tree::Contacts, b"bob", bob.as_bytes())?;
        store.put(Tree::Contacts, b"dr carol", carol.as_bytes())?;
        // A crash after moving "bob" but before deleting its old key.
        put(&store, &new_key(), "bob", bob)?;

        assert_eq!(migrate(&store)?, 1);
        assert_eq!(migrate(&store)?, 0, "nothing left to move");
        assert!(store.scan(Tree::Contacts, &[])?.is_empty());
        let book: Vec<_> = list(&store)?
            .into_iter()
            .map(|c| (c.name, c.account))
            .collect();
        assert_eq!(book, vec![("bob".into(), bob), ("dr carol".into(), carol)]);
        for (key, _) in store.scan(Tree::SealedContacts, &[])? {
            assert_eq!(key.len(), ENTRY_KEY_LEN);
            assert!(!key.windows(3).any(|w| w == b"bob"), "no name in a key");
        }
        assert_eq!(remove(&store, "bob")?, bob);
        assert_eq!(rename(&store, "dr carol", "carol")?, carol);
        assert_eq!(
            list(&store)?
                .into_iter()
                .map(|c| c.name)
                .collect::<Vec<_>>(),
            vec!["carol".to_string()]
        );
        Ok(())
    }
}
