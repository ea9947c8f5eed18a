//! MetalLB's address pool (`platform/load-balancer`, after `platform/addons`, with
//! `local.cluster.load_balancer: metallb`): an `IPAddressPool` of the addresses the
//! cluster phase carved from the Docker network's real subnet
//! (`LOAD_BALANCER_ADDRESSES`, never a hard-coded range), announced in layer 2 by an
//! `L2Advertisement`. Their kinds are MetalLB's CRDs, which Argo CD installs with the
//! chart: `platform/addons` has waited for that application to be synced and healthy.

use comind_core::cluster::{CLUSTER_PHASE_ID, LOAD_BALANCER_ADDRESSES};
use comind_core::{Error, Input, PhaseContext, PhaseId, Result};
use serde_json::json;

use super::addons::METALLB;
use crate::apply::{Kind, Object, ObjectSet, Pending, Scope};

/// The phase's id.
pub const ID: &str = "platform/load-balancer";
/// The component on its objects' labels.
pub const COMPONENT: &str = "platform-load-balancer";
/// The name of the pool and of its advertisement.
pub const POOL: &str = "comind";
/// The label on both, which keeps the pool from being pruned while a plan cannot
/// know its addresses yet.
const LABEL_POOL: &str = "comind.dev/pool";

fn pool_kind() -> Kind {
    Kind::custom(
        "metallb.io",
        "v1beta1",
        "IPAddressPool",
        "ipaddresspools",
        Scope::Namespaced,
    )
}

fn advertisement_kind() -> Kind {
    Kind::custom(
        "metallb.io",
        "v1beta1",
        "L2Advertisement",
        "l2advertisements",
        Scope::Namespaced,
    )
}

/// The kinds the phase owns (and prunes).
pub fn kinds() -> Vec<Kind> {
    vec![pool_kind(), advertisement_kind()]
}

fn object(kind: Kind, spec: serde_json::Value) -> Result<Object> {
    Object::dynamic(
        kind.clone(),
        json!({
            "apiVersion": kind.resource.api_version,
            "kind": kind.resource.kind,
            "metadata": {
                "name": POOL,
                "namespace": METALLB.namespace,
                "labels": {LABEL_POOL: POOL},
            },
            "spec": spec,
        }),
    )
}

/// The desired objects, from the cluster phase's `LOAD_BALANCER_ADDRESSES`.
///
/// # Errors
/// `Internal` when the cluster phase publishes no pool (a broken contract).
pub fn render(ctx: &PhaseContext) -> Result<ObjectSet> {
    let advertisement = object(advertisement_kind(), json!({"ipAddressPools": [POOL]}))?;
    match ctx.input(&PhaseId::new(CLUSTER_PHASE_ID), LOAD_BALANCER_ADDRESSES) {
        Input::Known(range) => {
            let pool = object(
                pool_kind(),
                json!({"addresses": [range.expose()], "autoAssign": true}),
            )?;
            Ok(ObjectSet::new(
                COMPONENT,
                vec![pool, advertisement],
                kinds(),
            ))
        }
        Input::KnownAfterApply => {
            let pool = object(pool_kind(), json!({"addresses": []}))?;
            Ok(ObjectSet::new(COMPONENT, vec![advertisement], kinds()).with_pending(Pending {
                objects: vec![pool],
                label: (LABEL_POOL.to_string(), POOL.to_string()),
                reason: "the cluster's network changes in this run: its addresses are known after apply"
                    .to_string(),
            }))
        }
        Input::Missing => Err(Error::internal(format!(
            "the cluster phase published no `{LOAD_BALANCER_ADDRESSES}` for MetalLB"
        ))),
    }
}
