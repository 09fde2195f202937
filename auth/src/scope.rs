use std::fmt;
use std::str::FromStr;

/// What a key may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Jobs, audits, schedules, dead letters, reports.
    Read,
    /// Create jobs, audits and sentiment requests.
    Submit,
    /// Requeue, park and purge dead letters; change schedules; supervisor controls; incidents.
    Operate,
    /// Manage keys.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Submit, Scope::Operate, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// Returns the scope's position in [`Scope::ALL`].
    pub fn index(self) -> usize {
        match self {
            Scope::Read => 0,
            Scope::Submit => 1,
            Scope::Operate => 2,
            Scope::Admin => 3,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Submit => 2,
            Scope::Operate => 4,
            Scope::Admin => 8,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a scope (read, submit, operate, admin)"))
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn new(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    /// Returns true when the set grants `scope` (directly, or through `admin`).
    pub fn grants(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Returns the scopes in the set, in [`Scope::ALL`] order.
    pub fn to_vec(self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|scope| self.0 & scope.bit() != 0)
            .collect()
    }

    /// Parses the stored form, `read,submit`.
    pub fn parse_list(text: &str) -> Result<Scopes, String> {
        let scopes = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Scopes::new(&scopes))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.to_vec().into_iter().map(Scope::as_str).collect();
        formatter.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves scopes round-trip through their stored form, admin grants everything, and an
    /// unknown scope is refused by name.
    #[test]
    fn scopes_parse_and_grant() {
        let scopes = Scopes::parse_list("submit, read").unwrap();
        assert_eq!(scopes.to_string(), "read,submit");
        assert!(scopes.grants(Scope::Read) && scopes.grants(Scope::Submit));
        assert!(!scopes.grants(Scope::Operate) && !scopes.grants(Scope::Admin));
        let admin = Scopes::new(&[Scope::Admin]);
        assert!(Scope::ALL.into_iter().all(|scope| admin.grants(scope)));
        assert!(
            Scopes::parse_list("read,root")
                .unwrap_err()
                .contains("`root`")
        );
        assert!(Scopes::parse_list("").unwrap().is_empty());
        for (position, scope) in Scope::ALL.into_iter().enumerate() {
            assert_eq!(scope.index(), position, "{scope}");
        }
    }
}
