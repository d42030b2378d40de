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

fn check_name(name: &str) -> Result<()> {
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

/// Add or rename a contact.
pub fn add(store: &Store, name: &str, account: AccountId) -> Result<()> {
    check_name(name)?;
    store.put(Tree::Contacts, name.as_bytes(), account.as_bytes())
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
