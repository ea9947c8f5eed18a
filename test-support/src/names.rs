//! Names no other test run uses, for environments, containers and other resources a
//! test creates (so that tests run side by side, and a leftover of a crashed run never
//! collides with a new one).

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

/// How many random characters follow the prefix.
pub const SUFFIX_LEN: usize = 6;

static TAKEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `<prefix>-<6 random lowercase letters>`, never the same twice in this process.
///
/// The result is a valid Comind environment name (lowercase letters, digits and `-`,
/// at most 20 characters) when `prefix` is one of at most 12 characters that starts
/// with a letter.
pub fn unique(prefix: &str) -> String {
    // The set stays consistent even if a holder panicked: it is only ever inserted into.
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let suffix: String = (0..SUFFIX_LEN).map(|_| fastrand::lowercase()).collect();
        let name = format!("{prefix}-{suffix}");
        if taken.insert(name.clone()) {
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_are_never_repeated() {
        let names: Vec<String> = (0..1000).map(|_| unique("conf")).collect();
        let distinct: BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        for name in &names {
            let suffix = name.strip_prefix("conf-").unwrap_or_default();
            assert_eq!(suffix.len(), SUFFIX_LEN, "{name}");
            assert!(suffix.chars().all(|c| c.is_ascii_lowercase()), "{name}");
        }
    }
}
