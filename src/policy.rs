//! Who may do what: principals and roles from config, the chat allow-list,
//! and the decision with its reason. Pure: no IO, no platform types.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::event::{ChatRef, PlatformKind, UserId};

/// A role name such as `oncall` or `deployer`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Role(String);

impl Role {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("role `{s}` must be 1-64 characters of a-z, 0-9, _ and -"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The person behind an event, as policy sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The configured name, or `None` for someone not in the config.
    pub name: Option<String>,
    /// `platform:user id`, always known.
    pub platform_id: String,
    pub roles: BTreeSet<Role>,
}

impl Principal {
    /// A stable key for audit and button audiences: the name when configured.
    pub fn key(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.platform_id)
    }
}

/// Which chats may use the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatPattern {
    Exact(ChatRef),
    AnyOn(PlatformKind),
}

impl ChatPattern {
    /// `feishu:oc_123` or `telegram:*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (platform, id) =
            s.split_once(':').ok_or_else(|| format!("`{s}` must look like platform:chat_id or platform:*"))?;
        let platform = PlatformKind::parse(platform).ok_or_else(|| format!("`{platform}` is not a platform"))?;
        match id {
            "" => Err(format!("`{s}` has an empty chat id")),
            "*" => Ok(Self::AnyOn(platform)),
            id => Ok(Self::Exact(ChatRef::new(platform, id))),
        }
    }

    fn matches(&self, chat: &ChatRef) -> bool {
        match self {
            Self::Exact(c) => c == chat,
            Self::AnyOn(p) => *p == chat.platform,
        }
    }
}

/// A principal as configured.
#[derive(Debug, Clone)]
pub struct PrincipalDef {
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub ids: Vec<(PlatformKind, UserId)>,
}

/// Why something was refused. Every denial is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    ChatNotAllowed { chat: ChatRef },
    MissingRole { role: Role },
    NotInAudience { allowed: Vec<String> },
}

#[derive(Debug)]
pub struct Policy {
    by_id: HashMap<(PlatformKind, UserId), usize>,
    principals: Vec<PrincipalDef>,
    default_roles: BTreeSet<Role>,
    allowed_chats: Vec<ChatPattern>,
    admin_role: Role,
}

impl Policy {
    /// `principals` are checked for duplicate ids by config validation.
    pub fn new(
        principals: Vec<PrincipalDef>,
        default_roles: BTreeSet<Role>,
        allowed_chats: Vec<ChatPattern>,
        admin_role: Role,
    ) -> Self {
        let mut by_id = HashMap::new();
        for (idx, p) in principals.iter().enumerate() {
            for id in &p.ids {
                by_id.insert(id.clone(), idx);
            }
        }
        Self { by_id, principals, default_roles, allowed_chats, admin_role }
    }

    pub fn principal(&self, platform: PlatformKind, user: &UserId) -> Principal {
        let platform_id = format!("{platform}:{user}");
        match self.by_id.get(&(platform, user.clone())) {
            Some(&idx) => {
                let def = &self.principals[idx];
                Principal { name: Some(def.name.clone()), platform_id, roles: def.roles.clone() }
            }
            None => Principal { name: None, platform_id, roles: self.default_roles.clone() },
        }
    }

    pub fn check_chat(&self, chat: &ChatRef) -> Result<(), Denial> {
        if self.allowed_chats.iter().any(|p| p.matches(chat)) {
            Ok(())
        } else {
            Err(Denial::ChatNotAllowed { chat: chat.clone() })
        }
    }

    /// The admin role satisfies every requirement.
    pub fn check_role(&self, principal: &Principal, role: Option<&Role>) -> Result<(), Denial> {
        match role {
            None => Ok(()),
            Some(r) if principal.roles.contains(r) || principal.roles.contains(&self.admin_role) => Ok(()),
            Some(r) => Err(Denial::MissingRole { role: r.clone() }),
        }
    }

    /// `allowed` empty means anyone who passes the role check.
    pub fn check_audience(&self, principal: &Principal, allowed: &[String]) -> Result<(), Denial> {
        if allowed.is_empty() || allowed.iter().any(|a| a == principal.key()) {
            Ok(())
        } else {
            Err(Denial::NotInAudience { allowed: allowed.to_vec() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(s: &str) -> Role {
        Role::parse(s).unwrap()
    }

    fn policy() -> Policy {
        Policy::new(
            vec![
                PrincipalDef {
                    name: "alice".into(),
                    roles: [role("deployer")].into(),
                    ids: vec![(PlatformKind::Feishu, UserId::new("ou_a")), (PlatformKind::Telegram, UserId::new("42"))],
                },
                PrincipalDef {
                    name: "root".into(),
                    roles: [role("admin")].into(),
                    ids: vec![(PlatformKind::Console, UserId::new("root"))],
                },
            ],
            [role("viewer")].into(),
            vec![ChatPattern::parse("feishu:oc_ops").unwrap(), ChatPattern::parse("console:*").unwrap()],
            role("admin"),
        )
    }

    #[test]
    fn principals_are_found_on_every_platform() {
        let p = policy();
        assert_eq!(p.principal(PlatformKind::Telegram, &UserId::new("42")).name.as_deref(), Some("alice"));
        let stranger = p.principal(PlatformKind::Telegram, &UserId::new("7"));
        assert_eq!(stranger.key(), "telegram:7");
        assert!(stranger.roles.contains(&role("viewer")));
    }

    #[test]
    fn roles_and_admin() {
        let p = policy();
        let alice = p.principal(PlatformKind::Feishu, &UserId::new("ou_a"));
        let root = p.principal(PlatformKind::Console, &UserId::new("root"));
        assert_eq!(p.check_role(&alice, Some(&role("deployer"))), Ok(()));
        assert_eq!(p.check_role(&alice, Some(&role("oncall"))), Err(Denial::MissingRole { role: role("oncall") }));
        assert_eq!(p.check_role(&root, Some(&role("oncall"))), Ok(()));
        assert_eq!(p.check_role(&alice, None), Ok(()));
    }

    #[test]
    fn chat_allow_list() {
        let p = policy();
        assert!(p.check_chat(&ChatRef::new(PlatformKind::Feishu, "oc_ops")).is_ok());
        assert!(p.check_chat(&ChatRef::new(PlatformKind::Console, "anything")).is_ok());
        assert!(p.check_chat(&ChatRef::new(PlatformKind::Feishu, "oc_other")).is_err());
        assert!(ChatPattern::parse("irc:#ops").is_err());
        assert!(ChatPattern::parse("feishu:").is_err());
    }

    #[test]
    fn audiences() {
        let p = policy();
        let alice = p.principal(PlatformKind::Feishu, &UserId::new("ou_a"));
        assert!(p.check_audience(&alice, &[]).is_ok());
        assert!(p.check_audience(&alice, &["alice".into()]).is_ok());
        assert!(p.check_audience(&alice, &["bob".into()]).is_err());
    }
}
