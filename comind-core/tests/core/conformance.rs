//! The fakes pass the conformance suites (which is also how the suites are tested).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use comind_core::environment::Environment;
use comind_core::service::{ServiceBackend, ServiceEndpoint, ServiceKind};
use comind_core::testing::conformance::{PhaseFixture, ServiceFixture, phase_suite, service_suite};
use comind_core::testing::{FakePhase, FakeService, World};
use comind_core::{Outputs, Phase, Result, Secret};

struct FakeServiceFixture {
    world: World,
    backend: Arc<FakeService>,
    env: Arc<Environment>,
}

#[async_trait]
impl ServiceFixture for FakeServiceFixture {
    fn backend(&self) -> Arc<dyn ServiceBackend> {
        self.backend.clone()
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        let selector: BTreeMap<String, String> = self.env.selector(Some(self.backend.kind().id()));
        Ok(self.world.select(&selector))
    }

    async fn write_marker(&self, _endpoint: &ServiceEndpoint, marker: &str) -> Result<()> {
        let volume = format!("{}-data", self.env.resource_name(self.backend.kind().id()));
        assert!(self.world.write_data(&volume, marker));
        Ok(())
    }

    async fn has_marker(&self, _endpoint: &ServiceEndpoint, marker: &str) -> Result<bool> {
        let volume = format!("{}-data", self.env.resource_name(self.backend.kind().id()));
        Ok(self
            .world
            .get(&volume)
            .is_some_and(|v| v.data.contains(marker)))
    }
}

#[tokio::test]
async fn every_fake_service_kind_passes_the_service_suite() {
    for kind in ServiceKind::ALL {
        let dir = tempfile::tempdir().unwrap();
        let world = World::new();
        let fixture = FakeServiceFixture {
            backend: Arc::new(FakeService::new(kind, &world).not_ready_for(2)),
            world,
            env: comind_core::testing::test_env("conformance", dir.path()),
        };
        service_suite(&fixture).await;
        assert!(
            fixture.world.names().is_empty(),
            "{kind}: the suite left resources"
        );
    }
}

struct FakePhaseFixture {
    world: World,
    phase: Arc<FakePhase>,
    env: Arc<Environment>,
}

#[async_trait]
impl PhaseFixture for FakePhaseFixture {
    fn phase(&self) -> Arc<dyn Phase> {
        self.phase.clone()
    }

    fn env(&self) -> Arc<Environment> {
        self.env.clone()
    }

    async fn owned_resources(&self) -> Result<Vec<String>> {
        Ok(self
            .world
            .select(&self.env.selector(Some(self.phase.id().as_str()))))
    }
}

#[tokio::test]
async fn the_fake_phase_passes_the_phase_suite() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let phase = FakePhase::new("stack", &world)
        .with_resources(&["stack/a", "stack/b"])
        .with_outputs(
            Outputs::new()
                .text("ENDPOINT", "https://example")
                .secret("TOKEN", Secret::new("a-long-enough-token")),
        );
    let fixture = FakePhaseFixture {
        phase: Arc::new(phase),
        env: comind_core::testing::test_env("conformance", dir.path()),
        world,
    };
    phase_suite(&fixture).await;
}

/// A backend that leaks a secret into a text output must fail the suite: the suites
/// themselves are tested, not just run.
#[tokio::test]
#[should_panic(expected = "leaks through")]
async fn the_suite_catches_a_leaked_secret() {
    let outputs = Outputs::new()
        .secret("PASSWORD", Secret::new("super-secret-value"))
        .text("URL", "postgres://app:super-secret-value@host/db");
    comind_core::testing::conformance::assert_secrets_redacted(&outputs, "leaky");
}

#[tokio::test]
#[should_panic(expected = "second ensure: expected no changes")]
async fn the_suite_catches_a_backend_that_is_not_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let fixture = FakeServiceFixture {
        backend: Arc::new(FakeService::new(ServiceKind::Cache, &world)),
        world: world.clone(),
        env: comind_core::testing::test_env("conformance", dir.path()),
    };
    // Wrap the fixture so every ensure sees a fresh "image": never in sync.
    struct Drifting(FakeServiceFixture, World);
    #[async_trait]
    impl ServiceFixture for Drifting {
        fn backend(&self) -> Arc<dyn ServiceBackend> {
            Arc::new(AlwaysNew(self.1.clone()))
        }
        fn env(&self) -> Arc<Environment> {
            self.0.env()
        }
        async fn owned_resources(&self) -> Result<Vec<String>> {
            self.0.owned_resources().await
        }
        async fn write_marker(&self, e: &ServiceEndpoint, m: &str) -> Result<()> {
            self.0.write_marker(e, m).await
        }
        async fn has_marker(&self, e: &ServiceEndpoint, m: &str) -> Result<bool> {
            self.0.has_marker(e, m).await
        }
    }
    struct AlwaysNew(World);
    #[async_trait]
    impl ServiceBackend for AlwaysNew {
        fn kind(&self) -> ServiceKind {
            ServiceKind::Cache
        }
        async fn reconcile(
            &self,
            ctx: &comind_core::PhaseContext,
            pass: &mut comind_core::Pass,
        ) -> Result<()> {
            self.fresh().reconcile(ctx, pass).await
        }
        async fn probe(&self, ctx: &comind_core::PhaseContext) -> Result<()> {
            self.fresh().probe(ctx).await
        }
        async fn endpoint(&self, ctx: &comind_core::PhaseContext) -> Result<ServiceEndpoint> {
            self.fresh().endpoint(ctx).await
        }
        async fn destroy(
            &self,
            ctx: &comind_core::PhaseContext,
            o: comind_core::DestroyOptions,
        ) -> Result<comind_core::Destroyed> {
            self.fresh().destroy(ctx, o).await
        }
    }
    impl AlwaysNew {
        fn fresh(&self) -> FakeService {
            FakeService::new(ServiceKind::Cache, &self.0)
                .with_image(&format!("fake:{}", fastrand::u32(..)))
        }
    }
    service_suite(&Drifting(fixture, world)).await;
}

#[tokio::test]
async fn the_state_directory_is_a_secret_store_that_writes_0600_files() {
    use comind_core::state::StateDir;
    use comind_core::{Profile, SecretStore, StateSecretStore};
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().to_path_buf(), Profile::Local, "dev");
    let store = StateSecretStore::new(state.clone());
    comind_core::testing::conformance::secret_store_suite(&store).await;
    store.create("kept", &Secret::new("{}")).await.unwrap();
    assert!(store.location("kept").ends_with("credentials/kept.json"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.credentials_path("kept"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// The fake store passes the same suite (so the code that tests with it sees what a
/// real store does), and keeps what it did not make.
#[tokio::test]
async fn the_fake_secret_store_passes_the_suite_and_keeps_what_it_did_not_make() {
    use comind_core::testing::FakeSecretStore;
    use comind_core::{Forgotten, SecretStore as _};
    let store = FakeSecretStore::new();
    comind_core::testing::conformance::secret_store_suite(&store).await;
    store.put_foreign("theirs", Secret::new("{\"k\":1}"));
    assert_eq!(
        store
            .create("theirs", &Secret::new("{}"))
            .await
            .unwrap()
            .expose(),
        "{\"k\":1}"
    );
    assert!(matches!(
        store.forget("theirs").await.unwrap(),
        Forgotten::Kept(_)
    ));
    assert!(store.peek("theirs").is_some());
}
