//! The apply engine every in-cluster phase uses: server-side apply with pruning, a
//! plan from the server's own dry run, and no state file.
//!
//! A phase renders its desired objects ([`ObjectSet`]) with a pure function of the
//! environment, and [`Applier::reconcile`] converges the cluster to them on a core
//! [`Pass`], so `plan` says exactly what `up` does:
//!
//! 1. Every object gets the ownership labels of its component, the spec hash and
//!    `app.kubernetes.io/managed-by: comind`.
//! 2. The live objects are read: one list per kind of what carries the component's
//!    labels, then one read per desired object that list does not hold. One with a
//!    desired object's name that does not carry the component's labels belongs to
//!    someone else: the run stops before writing anything and names it.
//! 3. In stages (CustomResourceDefinitions, then Namespaces, then everything else),
//!    each object is applied as a server-side dry run first and compared with the live
//!    object ([`diff::changed_paths`]): no difference, no write. A stage is validated
//!    whole before any of it is written, so an object the server refuses (422, with
//!    its field messages) leaves the rest of its stage unwritten, and no later stage
//!    is written before an earlier one is validated. An object that carries the spec
//!    hash of what is rendered and that only Comind wrote is not dry-run; nor, when
//!    applying, is a stage's single new object (its write is its check). The first two
//!    stages are dry-run at once; the CRDs are written while the later stages go on,
//!    unless custom resources of theirs are in the set: then they are waited on until
//!    `Established` first, since only then can those be validated.
//! 4. An applying pass then waits, all at once, for every object with a readiness
//!    rule ([`crate::ready`]) to be ready, changed or not.
//! 5. Objects of the phase's kinds that carry its labels but are no longer rendered
//!    (of those listed in step 2: the pass writes nothing else) are deleted (workloads
//!    in the foreground, so what they own goes first).
//!
//! Applies are forced (`force=true`) on objects that carry Comind's labels: Comind owns
//! every field it renders there, so a hand edit of such a field is drift that `up`
//! takes back, as it repairs a stopped container or a changed bucket policy. Fields
//! Comind does not render stay with whoever set them.

pub mod diff;
pub(crate) mod error;
pub mod manifest;
pub mod object;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use comind_core::reconcile::Pass;
use comind_core::{Change, Destroyed, Environment, Error, PhaseContext, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};

pub(crate) use error::{api_error, is_not_found};

use crate::ready;
pub use object::{Kind, Object, ObjectRef, Scope};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "comind";

/// How many requests the engine has in flight at once: enough to hide the API
/// server's latency (its writes wait on etcd; 32 applies Argo CD's 56 namespaced
/// objects in two rounds, and was measured faster than 16 and as fast as 48), few
/// enough not to trip its priority and fairness limits (about 49 seats for an
/// ordinary user's requests at the default settings).
const CONCURRENCY: usize = 32;

/// How long a CRD may take to become `Established`.
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// What one phase wants in the cluster.
#[derive(Debug, Clone)]
pub struct ObjectSet {
    /// The component named on the objects' labels (a label value: no `/`).
    pub component: String,
    /// The objects, in any order.
    pub objects: Vec<Object>,
    /// Every kind the phase owns: objects of these kinds that carry the component's
    /// labels and are not in `objects` are pruned.
    pub kinds: Vec<Kind>,
    /// How long an applying pass waits for each object with a readiness rule
    /// ([`crate::ready`]) to be ready; `None` applies without waiting (a CRD whose
    /// custom resources are in the set is still waited on: they need it served).
    pub ready_timeout: Option<Duration>,
    /// What a planning pass cannot render yet, because it stands on outputs that the
    /// same run changes: see [`ObjectSet::with_pending`].
    pub pending: Vec<Pending>,
}

/// Objects a planning pass knows by name but not by content: a dependency changes in
/// the same run, and what they hold is known after apply.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The objects, by name (their content is ignored). A plan lists each as created,
    /// or as updated when it exists; a foreign object of the name still stops the run.
    pub objects: Vec<Object>,
    /// A label carried by everything rendered for this dependency: nothing carrying
    /// it is pruned while its content is unknown (an object rendered only for some
    /// outputs of the dependency may come back).
    pub label: (String, String),
    /// Why: what is known only after apply.
    pub reason: String,
}

impl ObjectSet {
    /// The objects of `component`, owning `kinds`, waited on for
    /// [`DEFAULT_READY_TIMEOUT`].
    pub fn new(component: &str, objects: Vec<Object>, kinds: Vec<Kind>) -> Self {
        ObjectSet {
            component: component.to_string(),
            objects,
            kinds,
            ready_timeout: Some(DEFAULT_READY_TIMEOUT),
            pending: Vec::new(),
        }
    }

    /// The same set, with objects whose content a planning pass cannot know yet. An
    /// applying pass refuses a set with pending objects: by then every input is known.
    #[must_use]
    pub fn with_pending(mut self, pending: Pending) -> Self {
        self.pending.push(pending);
        self
    }

    /// The same set, applied without waiting for readiness.
    #[must_use]
    pub fn without_waiting(mut self) -> Self {
        self.ready_timeout = None;
        self
    }
}

/// How long an object may take to become ready unless its set says otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The order of applies: CRDs before their custom resources, Namespaces before what
/// lives in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Crds,
    Namespaces,
    Rest,
}

impl Stage {
    fn of(object: &Object) -> Self {
        if object.kind.is_crd() {
            Stage::Crds
        } else if object.kind.is_namespace() {
            Stage::Namespaces
        } else {
            Stage::Rest
        }
    }
}

/// One object's planned or made change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Planned {
    Create,
    Update(Vec<String>),
}

/// Applies [`ObjectSet`]s to one cluster.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier talking to the cluster through `client`.
    pub fn new(client: kube::Client) -> Self {
        Applier { client }
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        match (kind.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(self.client.clone(), ns, &kind.resource)
            }
            (Scope::Namespaced, None) => Api::all_with(self.client.clone(), &kind.resource),
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &kind.resource),
        }
    }

    /// Converges the cluster to `set` on `pass` (see the module documentation).
    /// Returns the live objects after the pass (as the dry run sees them when
    /// planning), by reference.
    ///
    /// # Errors
    /// `Conflict` for an object with a desired name that is not Comind's (nothing is
    /// written); `InvalidInput` with the server's field messages for an object it
    /// refuses; the API's other errors mapped onto core's kinds (404 not found, 409
    /// conflict, 403 permission, 422 invalid input, 429 and 5xx transient).
    pub async fn reconcile(
        &self,
        ctx: &PhaseContext,
        pass: &mut Pass,
        set: &ObjectSet,
    ) -> Result<BTreeMap<ObjectRef, DynamicObject>> {
        let env = ctx.env();
        if pass.is_apply() && !set.pending.is_empty() {
            return Err(Error::internal(format!(
                "{} was applied with objects whose content is unknown",
                set.component
            )));
        }
        let desired: Vec<Object> = set
            .objects
            .iter()
            .cloned()
            .map(|o| o.owned_by(env, &set.component))
            .collect();
        let pending: Vec<(&Pending, Object)> = set
            .pending
            .iter()
            .flat_map(|p| p.objects.iter().map(move |o| (p, o.clone())))
            .map(|(p, o)| (p, o.owned_by(env, &set.component)))
            .collect();
        let mut seen = BTreeSet::new();
        for object in &desired {
            if !seen.insert(object.reference()) {
                return Err(Error::internal(format!(
                    "{} is rendered twice by {}",
                    object.reference(),
                    set.component
                )));
            }
        }

        let named: Vec<Object> = desired
            .iter()
            .cloned()
            .chain(pending.iter().map(|(_, o)| o.clone()))
            .collect();
        let (live, owned) = self
            .read_live(env, &set.component, &set.kinds, &named)
            .await?;
        self.check_live(env, &set.component, &named, &live)?;
        for (why, object) in &pending {
            let reference = object.reference();
            let change = if live.contains_key(&reference) {
                Change::update(reference.kind.clone(), reference.path())
            } else {
                Change::create(reference.kind.clone(), reference.path())
            };
            pass.will(change.because(why.reason.clone()));
        }

        // What is created in this pass, for objects whose dry run must wait for it.
        let new_namespaces: BTreeSet<String> = desired
            .iter()
            .filter(|o| o.kind.is_namespace() && !live.contains_key(&o.reference()))
            .map(|o| o.name().to_string())
            .collect();
        let new_groups: BTreeSet<String> = desired
            .iter()
            .filter(|o| o.kind.is_crd() && !live.contains_key(&o.reference()))
            .filter_map(|o| crd_group(&o.object))
            .collect();
        let apply = pass.is_apply();
        // Custom resources whose CRD another party installs (Argo CD's sync of a
        // chart): that CRD may be written but not yet served. An applying pass waits
        // for it to be established; a plan lists what stands on an unserved one as
        // created.
        let foreign = foreign_crds(&desired);
        let unserved = if apply {
            BTreeSet::new()
        } else {
            self.unserved(&foreign).await?
        };
        // Its namespace or CRD is made by this pass: a plan cannot dry-run it yet.
        let deferred = |o: &Object| {
            !apply
                && !live.contains_key(&o.reference())
                && (o.namespace().is_some_and(|ns| new_namespaces.contains(ns))
                    || new_groups.contains(&o.kind.resource.group)
                    || unserved.contains(&o.kind.resource.group))
        };
        let of_stage = |stage: Stage| -> Vec<&Object> {
            desired.iter().filter(|o| Stage::of(o) == stage).collect()
        };
        let (crds, namespaces, rest) = (
            of_stage(Stage::Crds),
            of_stage(Stage::Namespaces),
            of_stage(Stage::Rest),
        );

        ctx.checkpoint()?;
        // Neither of the first two stages needs the other to be validated: both are
        // dry-run at once, and neither is written when the server refuses either. (The
        // CRDs are written while later stages go on, so their stage is always dry-run
        // whole; a lone new Namespace is checked by its write.)
        let (crd_checks, namespace_checks) = futures_util::future::join(
            self.validate(!apply, false, &crds, &live, &deferred),
            self.validate(!apply, apply, &namespaces, &live, &deferred),
        )
        .await;
        let (crd_checks, namespace_checks) = (crd_checks?, namespace_checks?);
        let mut result = BTreeMap::new();
        let crd_writes = record(pass, crd_checks, &mut result);
        let namespace_writes = record(pass, namespace_checks, &mut result);
        ctx.checkpoint()?;

        // The groups of the CRDs this pass writes that custom resources of the set
        // belong to: those CRDs must be served (`Established`) before the custom
        // resources can be validated.
        let served_later: BTreeSet<String> = crd_writes
            .iter()
            .filter_map(|o| crd_group(&o.object))
            .filter(|group| desired.iter().any(|o| o.kind.resource.group == *group))
            .collect();
        let crd_stage = async {
            let written = self.write_all(&crd_writes).await?;
            let established = written
                .iter()
                .filter(|(_, applied)| {
                    crd_group(applied).is_some_and(|g| served_later.contains(&g))
                })
                .map(|(reference, _)| (Kind::of::<CustomResourceDefinition>(), reference.clone()))
                .collect::<Vec<_>>();
            self.until_all_ready(ctx, established.into_iter(), CRD_ESTABLISHED_TIMEOUT)
                .await?;
            Ok::<_, Error>(written)
        };
        let failed = std::sync::atomic::AtomicBool::new(false);
        let rest_stage = {
            let (live, failed, deferred) = (&live, &failed, &deferred);
            let (namespace_writes, rest) = (&namespace_writes, &rest);
            let pass = &mut *pass;
            async move {
                let mut written = self.write_all(namespace_writes).await?;
                if apply && !foreign.is_empty() {
                    let kind = Kind::of::<CustomResourceDefinition>();
                    let crds = foreign.iter().map(|name| {
                        let reference = ObjectRef {
                            kind: kind.name(),
                            namespace: None,
                            name: name.clone(),
                        };
                        (kind.clone(), reference)
                    });
                    self.until_all_ready(ctx, crds, CRD_ESTABLISHED_TIMEOUT)
                        .await?;
                }
                ctx.checkpoint()?;
                // Validate (and plan) the whole stage before writing any of it.
                let checks = self.validate(!apply, apply, rest, live, deferred).await?;
                let mut seen = BTreeMap::new();
                let writes = record(pass, checks, &mut seen);
                ctx.checkpoint()?;
                // A CRD written at the same time was refused: its error is the pass's.
                if failed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok((written, seen));
                }
                written.extend(self.write_all(&writes).await?);
                Ok::<_, Error>((written, seen))
            }
        };
        let (crds_written, rest_written) = if served_later.is_empty() {
            // Nothing else needs the CRDs served: they are written while the rest is
            // validated and written.
            let crd_stage = async {
                let written = crd_stage.await;
                if written.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                written
            };
            let (crds_written, rest_written) =
                futures_util::future::join(crd_stage, rest_stage).await;
            (crds_written?, rest_written?)
        } else {
            let crds_written = crd_stage.await?;
            (crds_written, rest_stage.await?)
        };
        result.extend(crds_written);
        let (rest_written, rest_seen) = rest_written;
        result.extend(rest_seen);
        result.extend(rest_written);

        if let (true, Some(timeout)) = (pass.is_apply(), set.ready_timeout) {
            // Everything with a rule is waited on, changed or not: `up` ends with a
            // platform that works, not one that was merely written.
            let waits = desired
                .iter()
                .filter(|o| ready::rule_for(&o.kind).is_some())
                .map(|o| (o.kind.clone(), o.reference()));
            self.until_all_ready(ctx, waits, timeout).await?;
        }
        self.prune(ctx, pass, set, &named, owned).await?;
        Ok(result)
    }

    /// The change each of `stage` needs against its live state, from the server's dry
    /// run, and the object as it is or would be, in the order of their references.
    /// `deferred` objects (whose namespace or CRD a plan makes) are not dry-run; nor is
    /// an object that is exactly what Comind last applied. With `checked_by_write` (an
    /// applying pass, for a stage whose writes start only once it is validated and
    /// before anything after it is written), a stage in which the server has a single
    /// object to check, and that object is new, is not dry-run either: its write is
    /// the check, and nothing else of the stage is written before it.
    async fn validate<'o>(
        &self,
        planning: bool,
        checked_by_write: bool,
        stage: &[&'o Object],
        live: &BTreeMap<ObjectRef, DynamicObject>,
        deferred: &impl Fn(&Object) -> bool,
    ) -> Result<Vec<Check<'o>>> {
        let mut checked = Vec::new();
        let mut to_check = Vec::new();
        for object in stage {
            let current = live.get(&object.reference());
            if deferred(object) {
                checked.push((*object, Some(Planned::Create), None));
            } else if let Some(live) = current
                && untouched_since_applied(live, object)
            {
                checked.push((*object, None, Some(live.clone())));
            } else {
                to_check.push((*object, current.cloned()));
            }
        }
        if let [(object, None)] = to_check.as_slice()
            && checked_by_write
        {
            checked.push((*object, Some(Planned::Create), None));
            to_check.clear();
        }
        let checks: Vec<_> = to_check
            .into_iter()
            .map(|(object, current)| self.plan_one(object, current, planning))
            .collect();
        let planned: Vec<Check<'o>> = stream::iter(checks)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        checked.extend(planned);
        checked.sort_by_key(|(o, _, _)| o.reference());
        Ok(checked)
    }

    /// The change `object` needs against `current` (its live state), from the server's
    /// dry run, and the object as it is or would be.
    async fn plan_one<'o>(
        &self,
        object: &'o Object,
        current: Option<DynamicObject>,
        planning: bool,
    ) -> Result<Check<'o>> {
        let api = self.api(&object.kind, object.namespace());
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        let dry = match api
            .patch(object.name(), &params, &Patch::Apply(&object.object))
            .await
        {
            Ok(dry) => dry,
            // A plan of an object in a namespace that an earlier phase of the same run
            // makes (the baseline's `platform-<env>` for a later phase): created.
            Err(kube::Error::Api(status))
                if planning
                    && current.is_none()
                    && status.code == 404
                    && status
                        .details
                        .as_ref()
                        .is_some_and(|d| d.kind == "namespaces") =>
            {
                return Ok((object, Some(Planned::Create), None));
            }
            Err(e) => {
                return Err(api_error(
                    "dry-run apply",
                    &object.reference().to_string(),
                    e,
                ));
            }
        };
        let planned = match &current {
            None => Some(Planned::Create),
            Some(current) => {
                let paths = diff::changed_paths(&to_json(current)?, &to_json(&dry)?);
                (!paths.is_empty()).then_some(Planned::Update(paths))
            }
        };
        Ok((object, planned, Some(current.unwrap_or(dry))))
    }

    /// Writes `objects`, concurrently.
    async fn write_all(&self, objects: &[&Object]) -> Result<Vec<(ObjectRef, DynamicObject)>> {
        let writes: Vec<_> = objects.iter().map(|o| self.write_one(o)).collect();
        stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await
    }

    async fn write_one(&self, object: &Object) -> Result<(ObjectRef, DynamicObject)> {
        let applied = self.server_side_apply(object).await?;
        Ok((object.reference(), applied))
    }

    async fn read_one(&self, object: &Object) -> Result<Option<(ObjectRef, DynamicObject)>> {
        let api = self.api(&object.kind, object.namespace());
        match api.get_opt(object.name()).await {
            Ok(found) => Ok(found.map(|live| (object.reference(), live))),
            // The kind itself is not served (its CRD is made by this pass), or the
            // namespace does not exist yet.
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api_error("read", &object.reference().to_string(), e)),
        }
    }

    /// Waits, concurrently, until every object of `objects` is ready by its rule.
    async fn until_all_ready(
        &self,
        ctx: &PhaseContext,
        objects: impl Iterator<Item = (Kind, ObjectRef)>,
        timeout: Duration,
    ) -> Result<()> {
        let waits: Vec<_> = objects
            .filter_map(|(kind, reference)| {
                let rule = ready::rule_for(&kind)?;
                Some(async move {
                    ready::until_ready(&self.client, ctx, &kind, &reference, rule, timeout).await
                })
            })
            .collect();
        stream::iter(waits)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// The groups of those of `crds` (by name) that are absent or not established.
    async fn unserved(&self, crds: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        let kind = Kind::of::<CustomResourceDefinition>();
        let api = self.api(&kind, None);
        let mut unserved = BTreeSet::new();
        for name in crds {
            let live = api
                .get_opt(name)
                .await
                .map_err(|e| api_error("read", &format!("{} {name}", kind.name()), e))?;
            // The rule an applying pass waits on, checked once.
            let served = ready::rule_for(&kind).is_some_and(|rule| {
                live.is_some_and(|crd| matches!(rule(&crd), comind_core::wait::Observed::Ready(())))
            });
            if !served {
                let group = name.split_once('.').map_or(name.as_str(), |(_, g)| g);
                unserved.insert(group.to_string());
            }
        }
        Ok(unserved)
    }

    /// Server-side apply of `object` (its dry run is [`Self::plan_one`]'s).
    async fn server_side_apply(&self, object: &Object) -> Result<DynamicObject> {
        let api = self.api(&object.kind, object.namespace());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(object.name(), &params, &Patch::Apply(&object.object))
            .await
            .map_err(|e| api_error("apply", &object.reference().to_string(), e))
    }

    /// The live object of every desired one that exists, and every object of `kinds`
    /// that carries `component`'s labels (what pruning looks at). One labelled list
    /// per kind finds what Comind applied before; only the desired objects it does not
    /// hold are read one by one (they are new, or someone else's).
    async fn read_live(
        &self,
        env: &Environment,
        component: &str,
        kinds: &[Kind],
        desired: &[Object],
    ) -> Result<(
        BTreeMap<ObjectRef, DynamicObject>,
        Vec<(Kind, DynamicObject)>,
    )> {
        let owned = self.owned(env, component, kinds).await?;
        let listed: BTreeMap<(String, ObjectRef), &DynamicObject> = owned
            .iter()
            .map(|(kind, o)| {
                (
                    (kind.resource.api_version.clone(), reference_of(kind, o)),
                    o,
                )
            })
            .collect();
        let mut live = BTreeMap::new();
        let mut unlisted = Vec::new();
        for object in desired {
            let key = (object.kind.resource.api_version.clone(), object.reference());
            match listed.get(&key) {
                Some(found) => {
                    live.insert(key.1, (*found).clone());
                }
                None => unlisted.push(object),
            }
        }
        let reads: Vec<_> = unlisted.into_iter().map(|o| self.read_one(o)).collect();
        let found: Vec<Option<(ObjectRef, DynamicObject)>> = stream::iter(reads)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        live.extend(found.into_iter().flatten());
        Ok((live, owned))
    }

    /// Stops the pass before anything is written when an object of a desired name is
    /// being deleted (a transient error: the retry finds it gone) or exists without the
    /// component's ownership labels (a conflict).
    fn check_live(
        &self,
        env: &Environment,
        component: &str,
        desired: &[Object],
        live: &BTreeMap<ObjectRef, DynamicObject>,
    ) -> Result<()> {
        if let Some(going) = desired.iter().find(|o| {
            live.get(&o.reference())
                .is_some_and(|l| l.metadata.deletion_timestamp.is_some())
        }) {
            // Applying into it would fail object by object; the retry finds it gone.
            return Err(Error::unavailable(format!(
                "{} is being deleted (by an earlier `down` or prune); it is applied again \
                 once it is gone",
                going.reference()
            ))
            .with_resource(going.reference().to_string())
            .transient(true));
        }
        let foreign: Vec<String> = desired
            .iter()
            .filter_map(|o| {
                let current = live.get(&o.reference())?;
                let labels = current.metadata.labels.clone().unwrap_or_default();
                (!env.owns(&labels, Some(component))).then(|| o.reference().to_string())
            })
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "{} already exist{} without the labels of Comind's `{component}` for environment \
             `{}`; Comind never changes what it did not create, so nothing was applied",
            foreign.join(", "),
            if foreign.len() == 1 { "s" } else { "" },
            env.name()
        ))
        .with_resource(foreign[0].clone())
        .with_hint(
            "delete or rename it if it is a leftover; if it is in use, lay the platform on \
             another cluster or environment",
        ))
    }

    /// Deletes the objects of the set's kinds that carry its component's labels but are
    /// no longer rendered: of `owned`, as listed before the pass (the pass writes only
    /// desired objects, so what it must prune is what was there).
    async fn prune(
        &self,
        ctx: &PhaseContext,
        pass: &mut Pass,
        set: &ObjectSet,
        desired: &[Object],
        owned: Vec<(Kind, DynamicObject)>,
    ) -> Result<()> {
        let wanted: BTreeSet<ObjectRef> = desired.iter().map(Object::reference).collect();
        ctx.checkpoint()?;
        for (kind, object) in owned {
            let reference = reference_of(&kind, &object);
            let labels = object.metadata.labels.clone().unwrap_or_default();
            let unknown = set
                .pending
                .iter()
                .any(|p| labels.get(&p.label.0) == Some(&p.label.1));
            if wanted.contains(&reference) || unknown {
                continue;
            }
            if pass.will(
                Change::delete(reference.kind.clone(), reference.path())
                    .because("no longer rendered"),
            ) {
                self.delete(&kind, &object).await?;
            }
        }
        Ok(())
    }

    /// Every object of `kinds` that carries `component`'s labels in `env`, checked
    /// client-side too.
    async fn owned(
        &self,
        env: &Environment,
        component: &str,
        kinds: &[Kind],
    ) -> Result<Vec<(Kind, DynamicObject)>> {
        let selector = label_selector(&env.selector(Some(component)));
        let lists: Vec<_> = kinds
            .iter()
            .map(|kind| {
                let selector = &selector;
                async move {
                    let api = self.api(kind, None);
                    match api.list(&ListParams::default().labels(selector)).await {
                        Ok(list) => Ok(list
                            .items
                            .into_iter()
                            .map(|mut o| {
                                // Items of a list of a built-in kind come without their
                                // type; they are compared with objects that have it.
                                o.types.get_or_insert_with(|| kube::core::TypeMeta {
                                    api_version: kind.resource.api_version.clone(),
                                    kind: kind.resource.kind.clone(),
                                });
                                (kind.clone(), o)
                            })
                            .collect::<Vec<_>>()),
                        // A kind whose CRD is gone (or not made yet) has nothing of ours.
                        Err(e) if is_not_found(&e) => Ok(Vec::new()),
                        Err(e) => Err(api_error("list", &kind.name(), e)),
                    }
                }
            })
            .collect();
        let listed: Vec<Vec<(Kind, DynamicObject)>> = stream::iter(lists)
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(listed
            .into_iter()
            .flatten()
            .filter(|(_, o)| {
                env.owns(
                    &o.metadata.labels.clone().unwrap_or_default(),
                    Some(component),
                )
            })
            .collect())
    }

    async fn delete(&self, kind: &Kind, object: &DynamicObject) -> Result<bool> {
        let reference = reference_of(kind, object);
        let api = self.api(kind, object.metadata.namespace.as_deref());
        // Owners of other objects (workloads) go in the foreground, so what they own
        // is gone before they are; anything else goes at once.
        let params = if matches!(kind.resource.group.as_str(), "apps" | "batch") {
            DeleteParams::foreground()
        } else {
            DeleteParams::background()
        };
        match api.delete(&reference.name, &params).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api_error("delete", &reference.to_string(), e)),
        }
    }

    /// Deletes everything of `kinds` that carries `component`'s labels: what `down`
    /// does for an in-cluster phase. Namespaces go last, since deleting one deletes
    /// what is in it; a namespace that holds anything Comind did not create (someone's
    /// application) is kept, and reported so, because deleting it would delete that.
    ///
    /// # Errors
    /// When something cannot be listed or deleted.
    pub async fn destroy(
        &self,
        ctx: &PhaseContext,
        component: &str,
        kinds: &[Kind],
    ) -> Result<Destroyed> {
        let mut owned = self.owned(ctx.env(), component, kinds).await?;
        owned.sort_by_key(|(kind, _)| kind.is_namespace());
        let mut destroyed = Destroyed::default();
        let mut namespaced: Option<Vec<Kind>> = None;
        for (kind, object) in owned {
            ctx.checkpoint()?;
            let reference = reference_of(&kind, &object);
            if kind.is_namespace() && object.metadata.deletion_timestamp.is_some() {
                // Already being deleted (pruned by an earlier run).
                continue;
            }
            if kind.is_namespace() {
                if namespaced.is_none() {
                    namespaced = Some(self.namespaced_kinds().await?);
                }
                let kinds = namespaced.as_deref().unwrap_or_default();
                let foreign = self
                    .foreign_contents(ctx.env(), &reference.name, kinds)
                    .await?;
                if let Some(example) = foreign.first() {
                    destroyed.kept.push(comind_core::phase::Kept {
                        kind: reference.kind.clone(),
                        name: reference.name.clone(),
                        reason: format!(
                            "holds {} object{} Comind did not create (such as {example}); \
                             delete the namespace by hand once they are gone",
                            foreign.len(),
                            if foreign.len() == 1 { "" } else { "s" }
                        ),
                    });
                    continue;
                }
            }
            ctx.progress(format!("deleting {reference}"));
            if self.delete(&kind, &object).await? {
                destroyed
                    .changes
                    .push(Change::delete(reference.kind.clone(), reference.path()));
            }
        }
        Ok(destroyed)
    }

    /// Every namespaced kind the server lists, from discovery.
    async fn namespaced_kinds(&self) -> Result<Vec<Kind>> {
        let discovery = discover(&self.client).await?;
        Ok(discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .filter(|(_, caps)| {
                caps.scope == kube::discovery::Scope::Namespaced
                    && caps.supports_operation(kube::discovery::verbs::LIST)
            })
            .map(|(resource, _)| Kind {
                resource,
                scope: Scope::Namespaced,
            })
            .collect())
    }

    /// Objects in `namespace` that are not Comind's and not made by Kubernetes itself
    /// (what its controllers put in every namespace, such as the root CA ConfigMap and
    /// the default ServiceAccount; what they derive from other objects; events).
    async fn foreign_contents(
        &self,
        env: &Environment,
        namespace: &str,
        kinds: &[Kind],
    ) -> Result<Vec<String>> {
        let mut foreign = Vec::new();
        for kind in kinds {
            if kind.resource.kind == "Event" {
                continue;
            }
            let api = self.api(kind, Some(namespace));
            let items = match api.list(&ListParams::default().limit(20)).await {
                Ok(list) => list.items,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    return Err(api_error(
                        "list",
                        &format!("{} in {namespace}", kind.name()),
                        e,
                    ));
                }
            };
            for item in items {
                let name = item.metadata.name.clone().unwrap_or_default();
                // Every namespace's default ServiceAccount is made by the token
                // controller, whose writes are not always attributed to it.
                let automatic = made_by_controllers(&item)
                    || (kind.resource.kind == "ServiceAccount" && name == "default")
                    || item
                        .metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(|o| !o.is_empty());
                let ours = env.owns(&item.metadata.labels.clone().unwrap_or_default(), None);
                if !automatic && !ours {
                    foreign.push(format!("{} {namespace}/{name}", kind.name()));
                }
            }
        }
        Ok(foreign)
    }
}

/// Whether `live` is exactly what Comind last applied of `desired`, so that a dry run
/// would find nothing to change: it carries the spec hash of the desired object, and
/// no field manager but Comind ever wrote it outside its status. A hand edit, a
/// mutating admission controller or any other writer adds a managed-fields entry of
/// its own, and then the server's dry run decides.
fn untouched_since_applied(live: &DynamicObject, desired: &Object) -> bool {
    let hash = live
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(comind_core::environment::LABEL_SPEC_HASH));
    let Some(fields) = live.metadata.managed_fields.as_ref() else {
        return false;
    };
    hash.is_some()
        && hash.map(String::as_str) == desired.spec_hash()
        && fields.iter().all(|entry| {
            entry.subresource.as_deref() == Some("status")
                || (entry.manager.as_deref() == Some(FIELD_MANAGER)
                    && entry.operation.as_deref() == Some("Apply"))
        })
}

/// Whether only Kubernetes' own controllers ever wrote `object`.
fn made_by_controllers(object: &DynamicObject) -> bool {
    object
        .metadata
        .managed_fields
        .as_ref()
        .is_some_and(|fields| {
            !fields.is_empty()
                && fields.iter().all(|f| {
                    f.manager
                        .as_deref()
                        .is_some_and(|m| m.starts_with("kube-controller-manager"))
                })
        })
}

/// One object of a stage, the change it needs (none, when it is as desired) and the
/// object as it is or would be (none, when not known before it is written).
type Check<'o> = (&'o Object, Option<Planned>, Option<DynamicObject>);

/// Records the changes of a validated stage on `pass`, in order, and returns what to
/// write (nothing, when planning); what is not written goes into `seen` as it is.
fn record<'o>(
    pass: &mut Pass,
    checks: Vec<Check<'o>>,
    seen: &mut BTreeMap<ObjectRef, DynamicObject>,
) -> Vec<&'o Object> {
    let mut to_write = Vec::new();
    for (object, change, found) in checks {
        let reference = object.reference();
        let write = match change {
            None => false,
            Some(change) => pass.will(describe(&reference, &change)),
        };
        if write {
            to_write.push(object);
        } else if let Some(found) = found {
            seen.insert(reference, found);
        }
    }
    to_write
}

fn describe(reference: &ObjectRef, planned: &Planned) -> Change {
    match planned {
        Planned::Create => Change::create(reference.kind.clone(), reference.path()),
        Planned::Update(paths) => Change::update(reference.kind.clone(), reference.path())
            .because(format!("changes {}", paths.join(", "))),
    }
}

fn reference_of(kind: &Kind, object: &DynamicObject) -> ObjectRef {
    ObjectRef {
        kind: kind.name(),
        namespace: match kind.scope {
            Scope::Namespaced => object.metadata.namespace.clone(),
            Scope::Cluster => None,
        },
        name: object.metadata.name.clone().unwrap_or_default(),
    }
}

fn to_json(object: &DynamicObject) -> Result<serde_json::Value> {
    serde_json::to_value(object)
        .map_err(|e| Error::internal(format!("cannot encode a live object: {e}")))
}

/// The CRDs (by name, `<plural>.<group>`) of the custom resources in `desired` that
/// `desired` does not hold itself. A group is custom when it is dotted and not one of
/// Kubernetes' own (`*.k8s.io`); the undotted groups (`apps`, `batch`) are built in.
fn foreign_crds(desired: &[Object]) -> BTreeSet<String> {
    let own: BTreeSet<String> = desired
        .iter()
        .filter(|o| o.kind.is_crd())
        .filter_map(|o| crd_group(&o.object))
        .collect();
    desired
        .iter()
        .map(|o| &o.kind.resource)
        .filter(|r| {
            r.group.contains('.') && !r.group.ends_with(".k8s.io") && !own.contains(&r.group)
        })
        .map(|r| format!("{}.{}", r.plural, r.group))
        .collect()
}

/// The group a CRD object serves (`spec.group`).
fn crd_group(crd: &DynamicObject) -> Option<String> {
    crd.data
        .get("spec")
        .and_then(|s| s.get("group"))
        .and_then(|g| g.as_str())
        .map(str::to_string)
}

/// What the API server serves, from its aggregated discovery (two requests, one
/// consistent view) where it has it, group by group otherwise. The latter fails while
/// a group whose CRD was just made or deleted is listed but not (or no longer) served.
pub(crate) async fn discover(client: &kube::Client) -> Result<kube::discovery::Discovery> {
    match kube::discovery::Discovery::new(client.clone())
        .run_aggregated()
        .await
    {
        Ok(discovery) => Ok(discovery),
        Err(_) => kube::discovery::Discovery::new(client.clone())
            .run()
            .await
            .map_err(|e| api_error("discover", "the API server's resources", e)),
    }
}

/// `k=v,k=v` for a list call.
fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
