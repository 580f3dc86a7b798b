//! Quorum sizes: how requests name them (`one`, `quorum`, `all`, or a number) and how a name
//! becomes a count for a given replication factor `n` (Dynamo §4.5: R + W > N gives
//! read-your-writes; R = W = 1 gives the lowest latency).

use std::fmt;
use std::str::FromStr;

/// A requested quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// One replica.
    One,
    /// A majority: `n / 2 + 1`.
    Quorum,
    /// All `n` replicas.
    All,
    /// Exactly this many replicas (1 ..= n).
    N(u8),
}

impl Quorum {
    /// The replica count for replication factor `n`; a number above `n` (or 0) is an error.
    pub fn resolve(self, n: u8) -> Result<u8, String> {
        match self {
            Quorum::One => Ok(1),
            Quorum::Quorum => Ok(n / 2 + 1),
            Quorum::All => Ok(n),
            Quorum::N(k) if k >= 1 && k <= n => Ok(k),
            Quorum::N(k) => Err(format!("must be between 1 and n ({n}), got {k}")),
        }
    }
}

impl FromStr for Quorum {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "one" => Ok(Quorum::One),
            "quorum" => Ok(Quorum::Quorum),
            "all" => Ok(Quorum::All),
            _ => s
                .parse::<u8>()
                .map(Quorum::N)
                .map_err(|_| format!("{s:?} is not one, quorum, all or a number")),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::N(k) => write!(f, "{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve() {
        assert_eq!("quorum".parse::<Quorum>().map(|q| q.resolve(3)), Ok(Ok(2)));
        assert_eq!("all".parse::<Quorum>().map(|q| q.resolve(3)), Ok(Ok(3)));
        assert_eq!("2".parse::<Quorum>().map(|q| q.resolve(3)), Ok(Ok(2)));
        assert!("4".parse::<Quorum>().expect("parses").resolve(3).is_err());
        assert!("0".parse::<Quorum>().expect("parses").resolve(3).is_err());
        assert!("most".parse::<Quorum>().is_err());
        assert_eq!(Quorum::N(2).to_string().parse::<Quorum>(), Ok(Quorum::N(2)));
    }
}
