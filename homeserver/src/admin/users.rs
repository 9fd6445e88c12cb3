//! Accounts as administrators manage them: create one or many (from a CSV of user ID,
//! display name and department), deactivate, reactivate, reset passwords, grant or
//! revoke administration, end sessions.

use futures::StreamExt;
use kairan_types::csv;
use rand::Rng;
use ruma::{OwnedUserId, UserId};

use crate::{
    accounts::{hash_password, validate_localpart},
    services::Services,
    storage::{AdminUserRow, NewAdminUser},
};
use kairan_core::{
    error::{Error, Result},
    time::now_ms,
};

/// One account to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// A localpart or a full user ID of this server.
    pub user_id: String,
    pub displayname: Option<String>,
    pub department: Option<String>,
    /// `None`: a random initial password is made and returned once.
    pub password: Option<String>,
    pub admin: bool,
}

/// An account that was created, with its initial password when the server made it.
#[derive(Debug, Clone)]
pub struct CreatedUser {
    pub user_id: OwnedUserId,
    pub generated_password: Option<String>,
}

/// Longest display name and department kept (characters).
const MAX_FIELD_CHARS: usize = 256;
/// Accounts created at once during an import (password hashing is the cost).
const IMPORT_CONCURRENCY: usize = 4;

/// A random initial password: 20 characters from an alphabet without look-alikes.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    let chars: String = (0..20).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    // Groups of five, easier to read out and type.
    chars.as_bytes().chunks(5).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-")
}

fn clean_field(name: &str, value: Option<&str>) -> Result<Option<String>> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if v.chars().count() > MAX_FIELD_CHARS {
        return Err(Error::invalid_param(format!("{name} is longer than {MAX_FIELD_CHARS} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(Error::invalid_param(format!("{name} contains control characters")));
    }
    Ok(Some(v.to_owned()))
}

impl Services {
    /// A local user named by localpart or user ID, which must exist.
    pub async fn admin_target_user(&self, user: &str) -> Result<(OwnedUserId, AdminUserRow)> {
        let user_id = self.user_id_from(user.trim())?;
        if !self.is_local(&user_id) {
            return Err(Error::invalid_param(format!("{user_id} is not a user of this server")));
        }
        let row = self
            .store
            .admin_user(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("no user {user_id} on this server")))?;
        Ok((user_id, row))
    }

    /// Creates one account.
    pub async fn admin_create_user(&self, new: NewUser) -> Result<CreatedUser> {
        let raw = new.user_id.trim();
        if raw.is_empty() {
            return Err(Error::missing_param("user_id is required"));
        }
        let user_id = self.user_id_from(raw)?;
        if !self.is_local(&user_id) {
            return Err(Error::invalid_param(format!("{user_id} is not a user of this server")));
        }
        validate_localpart(user_id.localpart())?;
        let displayname = clean_field("displayname", new.displayname.as_deref())?;
        let department = clean_field("department", new.department.as_deref())?;
        if self.store.admin_user(user_id.as_str()).await?.is_some() {
            return Err(Error::user_in_use(format!("{user_id} already exists")));
        }
        let (password, generated) = match new.password {
            Some(p) if !p.is_empty() => (p, false),
            Some(_) => return Err(Error::invalid_param("password is empty")),
            None => (generate_password(), true),
        };
        let hash = hash_password(password.clone()).await?;
        let created = self
            .store
            .admin_create_user(&NewAdminUser {
                user_id: user_id.as_str(),
                password_hash: Some(&hash),
                is_admin: new.admin,
                displayname: displayname.as_deref().unwrap_or(user_id.localpart()),
                department: department.as_deref(),
                created_ts: now_ms(),
            })
            .await?;
        if !created {
            return Err(Error::user_in_use(format!("{user_id} already exists")));
        }
        tracing::info!(%user_id, admin = new.admin, "account created by an administrator");
        Ok(CreatedUser { user_id, generated_password: generated.then_some(password) })
    }

    /// Creates many accounts, a few at a time; one result per row, in the order given.
    /// A row that fails does not stop the others.
    pub async fn admin_import_users(&self, rows: Vec<NewUser>) -> Vec<Result<CreatedUser>> {
        // Rows run concurrently, so a user ID given twice is settled here: the first wins.
        let mut seen = std::collections::HashSet::new();
        let rows: Vec<(usize, NewUser, bool)> = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let key = self.user_id_from(row.user_id.trim()).map(|u| u.to_string()).unwrap_or_default();
                let repeated = !key.is_empty() && !seen.insert(key);
                (i, row, repeated)
            })
            .collect();
        let mut results: Vec<(usize, Result<CreatedUser>)> = futures::stream::iter(rows)
            .map(|(i, row, repeated)| async move {
                if repeated {
                    let id = self.user_id_from(row.user_id.trim()).map(|u| u.to_string()).unwrap_or_default();
                    return (i, Err(Error::user_in_use(format!("{id} appears on an earlier row"))));
                }
                (i, self.admin_create_user(row).await)
            })
            .buffer_unordered(IMPORT_CONCURRENCY)
            .collect()
            .await;
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// Deactivates an account: sessions end at once, it leaves its rooms, and it can no
    /// longer log in.
    pub async fn admin_deactivate(&self, caller: &UserId, user: &str) -> Result<OwnedUserId> {
        let (user_id, row) = self.admin_target_user(user).await?;
        if user_id == caller {
            return Err(Error::forbidden("you cannot deactivate your own account; ask another administrator"));
        }
        if row.deactivated {
            return Err(Error::bad_state(format!("{user_id} is already deactivated")));
        }
        self.deactivate_account(&user_id).await?;
        tracing::info!(%user_id, by = %caller, "account deactivated by an administrator");
        Ok(user_id)
    }

    /// Reactivates an account with a new password (given, or made and returned).
    pub async fn admin_reactivate(&self, user: &str, password: Option<String>) -> Result<CreatedUser> {
        let (user_id, row) = self.admin_target_user(user).await?;
        if !row.deactivated {
            return Err(Error::bad_state(format!("{user_id} is not deactivated")));
        }
        let (password, generated) = password_or_generated(password)?;
        let hash = hash_password(password.clone()).await?;
        self.store.reactivate_user(user_id.as_str(), &hash).await?;
        Ok(CreatedUser { user_id, generated_password: generated.then_some(password) })
    }

    /// Sets a new password (given, or made and returned); by default every session ends.
    pub async fn admin_reset_password(
        &self,
        user: &str,
        password: Option<String>,
        logout_devices: bool,
    ) -> Result<CreatedUser> {
        let (user_id, row) = self.admin_target_user(user).await?;
        if row.deactivated {
            return Err(Error::bad_state(format!("{user_id} is deactivated; reactivate it instead")));
        }
        let (password, generated) = password_or_generated(password)?;
        let hash = hash_password(password.clone()).await?;
        self.store.set_password_hash(user_id.as_str(), Some(&hash)).await?;
        if logout_devices {
            self.remove_devices(&user_id, None).await?;
        }
        Ok(CreatedUser { user_id, generated_password: generated.then_some(password) })
    }

    /// Grants or revokes server administration. Nobody revokes their own.
    pub async fn admin_set_admin(&self, caller: &UserId, user: &str, admin: bool) -> Result<OwnedUserId> {
        let (user_id, _) = self.admin_target_user(user).await?;
        if user_id == caller && !admin {
            return Err(Error::forbidden("you cannot remove your own administrator right; ask another administrator"));
        }
        self.store.set_user_admin(user_id.as_str(), admin).await?;
        Ok(user_id)
    }

    /// Ends one session (device) of a user.
    pub async fn admin_delete_device(&self, user: &str, device_id: &str) -> Result<OwnedUserId> {
        let (user_id, _) = self.admin_target_user(user).await?;
        if !self.store.devices(user_id.as_str()).await?.iter().any(|d| d.device_id == device_id) {
            return Err(Error::not_found(format!("{user_id} has no device {device_id}")));
        }
        self.remove_devices(&user_id, Some(&[device_id.to_owned()])).await?;
        Ok(user_id)
    }
}

fn password_or_generated(password: Option<String>) -> Result<(String, bool)> {
    match password {
        Some(p) if p.is_empty() => Err(Error::invalid_param("password is empty")),
        Some(p) => Ok((p, false)),
        None => Ok((generate_password(), true)),
    }
}

/// One row of an account CSV: `user ID, display name, department`, an optional fourth
/// column `password`. A first row whose first field is `user_id` (or `user`) is a header.
/// The rows of an account CSV, the header row (if any) left out.
pub fn parse_csv(text: &str) -> std::result::Result<Vec<csv::Record>, (usize, String)> {
    let mut records = csv::parse(text)?;
    if records.first().is_some_and(csv::is_header) {
        records.remove(0);
    }
    Ok(records)
}

/// The account a CSV row asks for, or why it cannot be one.
pub fn new_user(row: &csv::Record) -> std::result::Result<NewUser, String> {
    let n = row.fields.len();
    if !(3..=4).contains(&n) {
        return Err(format!(
            "expected 3 columns (user ID, display name, department) or 4 (with a password), found {n}"
        ));
    }
    let user_id = row.fields[0].trim().to_owned();
    if user_id.is_empty() {
        return Err("the user ID is empty".into());
    }
    Ok(NewUser {
        user_id,
        displayname: Some(row.fields[1].clone()),
        department: Some(row.fields[2].clone()),
        password: row.fields.get(3).filter(|p| !p.is_empty()).cloned(),
        admin: false,
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_and_lines() {
        let text = "\u{feff}user_id,displayname,department\r\nalice,\"Alice, A.\",総務課\n\nbob,\"Bob \"\"B\"\"\",\"two\nlines\"\ncarol,Carol,人事課";
        let rows = parse_csv(text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], csv::Record { line: 2, fields: vec!["alice".into(), "Alice, A.".into(), "総務課".into()] });
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[1].fields, ["bob", "Bob \"B\"", "two\nlines"]);
        assert_eq!(rows[2].line, 6);
        assert_eq!(rows[2].fields, ["carol", "Carol", "人事課"]);
        assert!(parse_csv("a,\"b,c\n").is_err());
        assert_eq!(parse_csv("a,b\"c,d\n").unwrap_err().0, 1);
        assert!(parse_csv("").unwrap().is_empty());
    }

    #[test]
    fn csv_rows_become_accounts() {
        let row = csv::Record { line: 3, fields: vec!["dave".into(), "Dave".into(), "財政課".into()] };
        let u = new_user(&row).unwrap();
        assert_eq!((u.user_id.as_str(), u.department.as_deref(), u.password), ("dave", Some("財政課"), None));
        let short = csv::Record { line: 4, fields: vec!["eve".into()] };
        assert!(new_user(&short).unwrap_err().contains("found 1"));
        let empty = csv::Record { line: 5, fields: vec!["".into(), "x".into(), "y".into()] };
        assert!(new_user(&empty).is_err());
    }

    #[test]
    fn generated_passwords() {
        let p = generate_password();
        assert_eq!(p.len(), 23);
        assert_ne!(p, generate_password());
    }
}
