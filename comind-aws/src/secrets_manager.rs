//! AWS Secrets Manager as an environment's [`SecretStore`] (`aws.secret_store:
//! secrets-manager`): the secrets Comind makes once (the Sealed Secrets controller's
//! key) live in the environment's account and region, shared by everyone who runs the
//! environment, and outlive any one machine's state directory.
//!
//! Each name is the secret `comind/<environment>/<name>`, tagged with the
//! environment's ownership tags (component `secret-store`): `forget` deletes only a
//! secret that carries them. A secret of that name without them (one an operator put
//! there, say, to bring a key of their own) is read and used, but never deleted.
//!
//! The value is encrypted with the account's `aws/secretsmanager` key. `forget` (what
//! `down --purge` calls) deletes for good, without the recovery window, as the state
//! directory's store removes its file: a window would hold the name, and the next
//! `up` could not make a new key under it.

use std::sync::Arc;

use async_trait::async_trait;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use comind_core::{Environment, Error, Forgotten, Result, Secret, SecretStore};

use crate::clients::Connector;
use crate::error::AwsResultExt;
use crate::tags;

/// The component on the secrets' ownership tags.
pub const COMPONENT: &str = "secret-store";

/// The environment's secrets in AWS Secrets Manager. Made by
/// [`AwsProvider::secret_store`](crate::AwsProvider::secret_store), so it shares the
/// provider's SDK configuration and interceptors.
#[derive(Clone)]
pub struct SecretsManagerStore {
    aws: Arc<Connector>,
    env: Arc<Environment>,
}

impl std::fmt::Debug for SecretsManagerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerStore")
            .field("environment", &self.env.name())
            .finish_non_exhaustive()
    }
}

impl SecretsManagerStore {
    pub(crate) fn new(aws: Arc<Connector>, env: Arc<Environment>) -> Self {
        SecretsManagerStore { aws, env }
    }

    /// The secret that keeps `name`: `comind/<environment>/<name>`.
    pub fn secret_name(&self, name: &str) -> String {
        format!("comind/{}/{name}", self.env.name())
    }

    async fn client(&self) -> Result<aws_sdk_secretsmanager::Client> {
        Ok(self.aws.clients(&self.env).await?.secrets_manager.clone())
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    fn location(&self, name: &str) -> String {
        let region = self
            .env
            .config()
            .aws
            .region
            .as_deref()
            .map(|r| format!(" in {r}"))
            .unwrap_or_default();
        format!(
            "AWS Secrets Manager secret {}{region}",
            self.secret_name(name)
        )
    }

    async fn get(&self, name: &str) -> Result<Option<Secret>> {
        let id = self.secret_name(name);
        let resource = format!("secret {id}");
        let answer = self
            .client()
            .await?
            .get_secret_value()
            .secret_id(&id)
            .send()
            .await;
        let answer = match answer {
            // A secret deleted with a recovery window answers "marked for deletion":
            // its value is out of reach until it is restored.
            Err(e) if e.code() == Some("InvalidRequestException") => {
                return Err(Error::conflict(format!(
                    "{resource} cannot be read: {}",
                    e.message().unwrap_or("Secrets Manager refused the request")
                ))
                .with_resource(resource)
                .with_hint(
                    "if it is scheduled for deletion, restore it (Secrets Manager's \
                     RestoreSecret, or the console) to keep its key, or delete it for good \
                     to let Comind make a new one",
                ));
            }
            other => other.found("GetSecretValue", &resource)?,
        };
        let Some(answer) = answer else {
            return Ok(None);
        };
        match answer.secret_string {
            Some(value) => Ok(Some(Secret::new(value))),
            None => Err(Error::conflict(format!(
                "{resource} holds binary data, not the text Comind keeps there"
            ))
            .with_resource(resource)
            .with_hint("put the value back as SecretString, or delete the secret")),
        }
    }

    async fn create(&self, name: &str, value: &Secret) -> Result<Secret> {
        let id = self.secret_name(name);
        let resource = format!("secret {id}");
        let tags: Vec<_> = tags::ownership(&self.env, COMPONENT, None)
            .into_iter()
            .map(|(k, v)| {
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
            })
            .collect();
        let created = self
            .client()
            .await?
            .create_secret()
            .name(&id)
            .description(format!(
                "Comind environment `{}`: {name}, made once; `comind down --purge` deletes it",
                self.env.name()
            ))
            .secret_string(value.expose())
            .set_tags(Some(tags))
            .send()
            .await;
        match created {
            Ok(_) => Ok(value.clone()),
            // Made by an earlier attempt, or by someone else first: what is there is
            // the value, and it is never replaced.
            Err(e) if e.code() == Some("ResourceExistsException") => {
                self.get(name).await?.ok_or_else(|| {
                    Error::conflict(format!(
                        "{resource} exists but has no value Comind can read"
                    ))
                    .with_resource(resource)
                    .with_hint("look at the secret in the console, then run `comind up` again")
                })
            }
            Err(e) => Err::<Secret, _>(e).aws("CreateSecret", &resource),
        }
    }

    async fn forget(&self, name: &str) -> Result<Forgotten> {
        let id = self.secret_name(name);
        let resource = format!("secret {id}");
        let client = self.client().await?;
        let described = client
            .describe_secret()
            .secret_id(&id)
            .send()
            .await
            .found("DescribeSecret", &resource)?;
        let Some(described) = described else {
            return Ok(Forgotten::Absent);
        };
        if described.deleted_date.is_some() {
            // Already scheduled for deletion (by hand): it goes by itself.
            return Ok(Forgotten::Absent);
        }
        let tags: tags::Tags = described
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| Some((t.key?, t.value?)))
            .collect();
        if !self.env.owns(&tags, Some(COMPONENT)) {
            return Ok(Forgotten::Kept(format!(
                "{resource} is not tagged as Comind's, so Comind does not delete it; delete it \
                 yourself if it should go"
            )));
        }
        client
            .delete_secret()
            .secret_id(&id)
            .force_delete_without_recovery(true)
            .send()
            .await
            .found("DeleteSecret", &resource)?;
        Ok(Forgotten::Removed)
    }
}
