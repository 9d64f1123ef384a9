//! The permission catalogue of product.md as a closed Rust type.

use std::fmt;

macro_rules! permissions {
    ($($variant:ident => $code:literal),* $(,)?) => {
        /// One permission code. Roles grant sets of them; RPCs require one.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($variant),*
        }

        impl Permission {
            /// Every permission, in catalogue order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),*];

            /// The code stored in `core.permissions.code` and carried in tokens.
            pub const fn code(self) -> &'static str {
                match self {
                    $(Permission::$variant => $code),*
                }
            }

            /// Parses a permission code; unknown codes are `None`.
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

permissions! {
    TenantRead => "tenant.read",
    TenantManage => "tenant.manage",
    UserRead => "user.read",
    UserManage => "user.manage",
    RoleRead => "role.read",
    RoleManage => "role.manage",
    TeamRead => "team.read",
    TeamManage => "team.manage",
    OutcomeRead => "outcome.read",
    OutcomeWrite => "outcome.write",
    OutcomeValidate => "outcome.validate",
    HypothesisRead => "hypothesis.read",
    HypothesisWrite => "hypothesis.write",
    HypothesisConclude => "hypothesis.conclude",
    DecisionRead => "decision.read",
    DecisionWrite => "decision.write",
    DecisionResolve => "decision.resolve",
    DecisionEscalate => "decision.escalate",
    CommentWrite => "comment.write",
    StakeholderRead => "stakeholder.read",
    StakeholderManage => "stakeholder.manage",
    AuditRead => "audit.read",
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A set of permissions as a bit set: checks on the hot path are one AND.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct PermissionSet(u32);

impl PermissionSet {
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & (1 << permission as u32) != 0
    }

    pub fn insert(&mut self, permission: Permission) {
        self.0 |= 1 << permission as u32;
    }

    /// Whether every permission of `other` is in `self`.
    pub fn is_superset(self, other: PermissionSet) -> bool {
        other.0 & !self.0 == 0
    }

    /// Permissions of `other` that `self` lacks.
    pub fn missing_from(self, other: PermissionSet) -> impl Iterator<Item = Permission> {
        other.iter().filter(move |p| !self.contains(*p))
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    pub fn codes(self) -> Vec<String> {
        self.iter().map(|p| p.code().to_owned()).collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::default();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Permission::code))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::from_code(p.code()), Some(*p));
        }
        assert_eq!(Permission::ALL.len(), 22);
        assert_eq!(Permission::from_code("tenant.root"), None);
    }

    #[test]
    fn superset_and_missing() {
        let small: PermissionSet = [Permission::UserRead].into_iter().collect();
        let big: PermissionSet = [Permission::UserRead, Permission::UserManage]
            .into_iter()
            .collect();
        assert!(big.is_superset(small));
        assert!(!small.is_superset(big));
        assert_eq!(
            small.missing_from(big).collect::<Vec<_>>(),
            vec![Permission::UserManage]
        );
    }
}
