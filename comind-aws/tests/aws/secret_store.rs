//! AWS Secrets Manager as the environment's secret store (`aws.secret_store:
//! secrets-manager`), against moto: it passes the core's `secret_store_suite`, tags
//! what it makes as the environment's, and never deletes a secret it did not make.

use comind_core::testing::conformance::secret_store_suite;
use comind_core::{Forgotten, Secret, SecretStore};
use comind_test_support::moto::Moto;
use comind_test_support::require_peer;

use crate::support::{self, CallLog};

fn secrets_manager(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&moto.sdk_config())
}

#[tokio::test]
async fn secrets_manager_passes_the_secret_store_suite_and_tags_what_it_makes() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let env = support::env("smstore", state.path(), |_| {});
    let provider = support::provider(&moto, &CallLog::default());
    let store = provider.secret_store(env.clone());
    secret_store_suite(&store).await;

    let value = Secret::new("{\"private_key\":\"-----BEGIN PRIVATE KEY-----...\"}");
    store.create("sealed-secrets", &value).await.unwrap();
    let described = secrets_manager(&moto)
        .describe_secret()
        .secret_id("comind/smstore/sealed-secrets")
        .send()
        .await
        .unwrap();
    let tags: std::collections::BTreeMap<String, String> = described
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        env.owns(&tags, Some(comind_aws::secrets_manager::COMPONENT)),
        "{tags:?}"
    );
    // Tags and the description carry no part of the value.
    let shown = format!("{tags:?} {:?}", described.description());
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(
        store
            .location("sealed-secrets")
            .contains("comind/smstore/sealed-secrets"),
        "{}",
        store.location("sealed-secrets")
    );
    assert_eq!(
        store.forget("sealed-secrets").await.unwrap(),
        Forgotten::Removed
    );
}

/// A secret under the name that is not tagged as the environment's (an operator's own
/// key, say) is read and used, and never replaced or deleted.
#[tokio::test]
async fn a_secret_comind_did_not_make_is_used_but_never_replaced_or_deleted() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let env = support::env("smforeign", state.path(), |_| {});
    let provider = support::provider(&moto, &CallLog::default());
    let store = provider.secret_store(env.clone());
    let peer = secrets_manager(&moto);
    peer.create_secret()
        .name("comind/smforeign/sealed-secrets")
        .secret_string("{\"theirs\":true}")
        .send()
        .await
        .unwrap();

    let read = store.get("sealed-secrets").await.unwrap().unwrap();
    assert_eq!(read.expose(), "{\"theirs\":true}");
    let kept = store
        .create("sealed-secrets", &Secret::new("{\"ours\":true}"))
        .await
        .unwrap();
    assert_eq!(kept.expose(), "{\"theirs\":true}", "the first value stays");
    let forgotten = store.forget("sealed-secrets").await.unwrap();
    let Forgotten::Kept(reason) = forgotten else {
        panic!("a foreign secret was not kept: {forgotten:?}");
    };
    assert!(
        reason.contains("comind/smforeign/sealed-secrets"),
        "{reason}"
    );
    let still = peer
        .get_secret_value()
        .secret_id("comind/smforeign/sealed-secrets")
        .send()
        .await
        .unwrap();
    assert_eq!(still.secret_string(), Some("{\"theirs\":true}"));
}

/// A secret scheduled for deletion (by hand, with a recovery window) is neither read
/// as absent (which would make a new key under a name that comes back) nor written:
/// the error says to restore it or delete it for good.
#[tokio::test]
async fn a_secret_scheduled_for_deletion_is_an_error_that_says_what_to_do() {
    let moto = require_peer!(Moto::start());
    let state = tempfile::tempdir().unwrap();
    let env = support::env("smdeleted", state.path(), |_| {});
    let provider = support::provider(&moto, &CallLog::default());
    let store = provider.secret_store(env.clone());
    store
        .create("sealed-secrets", &Secret::new("{}"))
        .await
        .unwrap();
    secrets_manager(&moto)
        .delete_secret()
        .secret_id("comind/smdeleted/sealed-secrets")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let err = store.get("sealed-secrets").await.unwrap_err();
    assert_eq!(err.kind(), comind_core::ErrorKind::Conflict, "{err}");
    assert!(
        err.hint().unwrap_or_default().contains("restore"),
        "{:?}",
        err.hint()
    );
}
