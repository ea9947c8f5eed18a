//! What the AWS integration tests share: environments, a recorder of AWS calls,
//! listings of what each component owns, whole runs, and runs in a child process
//! that a test can kill. The moto_server of each test comes from
//! `comind_test_support::moto`, and the fault proxy in front of it from
//! `comind_test_support::aws_faults`.

pub mod child;
pub mod owned;
pub mod runs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use comind_aws::AwsProvider;
use comind_core::config::{Config, EnvironmentName, Profile};
use comind_core::engine::Cancellation;
use comind_core::{Environment, Operation, Outputs, Phase, PhaseContext, PhaseId};
use comind_test_support::moto::Moto;

/// An AWS environment named `name` with its state under `state`, adjusted by `edit`.
pub fn env(
    name: &str,
    state: &std::path::Path,
    edit: impl FnOnce(&mut Config),
) -> Arc<Environment> {
    let mut config = Config::default();
    config.environment = EnvironmentName::new(name).expect("environment name");
    config.profile = Profile::Aws;
    edit(&mut config);
    Arc::new(Environment::with_state_root(config, state))
}

/// One AWS call as the SDK made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The service (`EC2`, `RDS`...).
    pub service: String,
    /// The operation (`CreateVpc`).
    pub operation: String,
}

impl Call {
    /// Whether the call can change anything: everything but Describe, List, Get and
    /// Head calls.
    pub fn is_mutating(&self) -> bool {
        !["Describe", "List", "Get", "Head"]
            .iter()
            .any(|read| self.operation.starts_with(read))
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.service, self.operation)
    }
}

/// An SDK interceptor that records every call, and can cancel a run when a given
/// operation starts (to interrupt it half-way).
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<Call>>>,
    cancel_on: Arc<Mutex<Option<(String, Cancellation)>>>,
}

impl CallLog {
    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls so far that can change something.
    pub fn mutating(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(Call::is_mutating)
            .map(|c| c.to_string())
            .collect()
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// Requests cancellation of `run` when `operation` is called next.
    pub fn cancel_on(&self, operation: &str, run: &Cancellation) {
        *self.cancel_on.lock().unwrap() = Some((operation.to_string(), run.clone()));
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    // Not `read_before_execution`: for a client's interceptors that runs before the
    // operation's configuration (which holds its name) is applied.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let call = Call {
                service: metadata.service().to_string(),
                operation: metadata.name().to_string(),
            };
            let mut cancel = self.cancel_on.lock().unwrap();
            if cancel.as_ref().is_some_and(|(op, _)| op == &call.operation)
                && let Some((_, run)) = cancel.take()
            {
                run.request();
            }
            self.calls.lock().unwrap().push(call);
        }
        Ok(())
    }
}

/// A provider for `moto` that records its calls in `log`.
pub fn provider(moto: &Moto, log: &CallLog) -> AwsProvider {
    AwsProvider::builder()
        .sdk_config(moto.sdk_config())
        .interceptor(log.clone())
        .build()
}

/// The phase `id` of `provider` for `env`.
pub fn phase(provider: &AwsProvider, env: &Arc<Environment>, id: &str) -> Arc<dyn Phase> {
    use comind_core::Provider as _;
    provider
        .phases(env)
        .expect("phases")
        .into_iter()
        .find(|p| p.id().as_str() == id)
        .unwrap_or_else(|| panic!("no phase `{id}`"))
}

/// Applies phase `id` alone with `inputs` and returns its outputs.
pub async fn apply(
    provider: &AwsProvider,
    env: &Arc<Environment>,
    id: &str,
    inputs: HashMap<PhaseId, Outputs>,
) -> Outputs {
    let ctx = PhaseContext::standalone(PhaseId::new(id), Operation::Apply, env.clone(), inputs);
    match phase(provider, env, id).apply(&ctx).await {
        Ok(applied) => applied.outputs,
        Err(err) => panic!("apply of `{id}`: {err}"),
    }
}

/// The clients a test uses to look at moto behind the provider's back.
pub struct Peek {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub eks: aws_sdk_eks::Client,
    pub rds: aws_sdk_rds::Client,
    pub s3: aws_sdk_s3::Client,
    pub elasticache: aws_sdk_elasticache::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub kms: aws_sdk_kms::Client,
}

impl Peek {
    pub fn new(moto: &Moto) -> Self {
        let sdk = moto.sdk_config();
        Peek {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            eks: aws_sdk_eks::Client::new(&sdk),
            rds: aws_sdk_rds::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(true)
                    .build(),
            ),
            elasticache: aws_sdk_elasticache::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            kms: aws_sdk_kms::Client::new(&sdk),
        }
    }
}
