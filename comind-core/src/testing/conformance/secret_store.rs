//! The behaviour every [`SecretStore`] must show.

use crate::secret::Secret;
use crate::secret_store::{Forgotten, SecretStore};

/// Drives `store` through the contract of [`SecretStore`] under a name of its own
/// (`conformance-<random>`), and leaves nothing behind: nothing read writes, the first
/// value created is the one kept, a forgotten name is empty and usable again, and no
/// value shows in the store's `Debug` or its locations.
///
/// # Panics
/// With the step that failed.
pub async fn secret_store_suite(store: &dyn SecretStore) {
    let name = format!("conformance-{:08x}", fastrand::u32(..));
    let first = Secret::new(format!(
        "{{\"value\":\"first-{:016x}\"}}",
        fastrand::u64(..)
    ));
    let second = Secret::new(format!(
        "{{\"value\":\"second-{:016x}\"}}",
        fastrand::u64(..)
    ));
    let read = |step: &'static str| {
        let name = name.clone();
        async move {
            store
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("{step}: get failed: {e}"))
                .map(|s| s.expose().to_string())
        }
    };

    assert_eq!(
        read("before anything").await,
        None,
        "a new name holds nothing"
    );
    assert_eq!(
        read("a second read").await,
        None,
        "reading an absent name must not create it"
    );

    let kept = store
        .create(&name, &first)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert_eq!(
        kept.expose(),
        first.expose(),
        "create keeps the value it was given"
    );
    assert_eq!(read("after create").await.as_deref(), Some(first.expose()));

    let kept = store
        .create(&name, &second)
        .await
        .unwrap_or_else(|e| panic!("create again: {e}"));
    assert_eq!(
        kept.expose(),
        first.expose(),
        "a second create must return the value made first, never replace it"
    );
    assert_eq!(
        read("after the second create").await.as_deref(),
        Some(first.expose())
    );

    for (what, text) in [
        ("Debug", format!("{store:?}")),
        ("location", store.location(&name)),
    ] {
        assert!(
            !text.contains(first.expose()) && !text.contains("first-"),
            "the store's {what} shows a value: {text}"
        );
    }

    let forgotten = store
        .forget(&name)
        .await
        .unwrap_or_else(|e| panic!("forget: {e}"));
    assert_eq!(
        forgotten,
        Forgotten::Removed,
        "forget removes what create made"
    );
    assert_eq!(
        read("after forget").await,
        None,
        "a forgotten name holds nothing"
    );
    let forgotten = store
        .forget(&name)
        .await
        .unwrap_or_else(|e| panic!("forget again: {e}"));
    assert_eq!(
        forgotten,
        Forgotten::Absent,
        "forgetting an empty name is no error"
    );

    // `down --purge` then `up` makes a new key under the same name.
    let kept = store
        .create(&name, &second)
        .await
        .unwrap_or_else(|e| panic!("create after forget: {e}"));
    assert_eq!(
        kept.expose(),
        second.expose(),
        "a forgotten name takes a new value"
    );
    let forgotten = store
        .forget(&name)
        .await
        .unwrap_or_else(|e| panic!("the last forget: {e}"));
    assert_eq!(forgotten, Forgotten::Removed);
}
