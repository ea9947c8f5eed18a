//! Tests of comind-gitops against a real Kubernetes API server: kube-apiserver v1.36
//! with etcd and kube-controller-manager from `../shared/test-peers`, one control plane
//! for the whole binary (`comind_test_support::kube`). No Pod ever runs there (no
//! kubelet); a test that needs a controller's effect writes it, and says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apply;
mod argocd;
mod backups;
mod consoles;
mod platform;
mod ready;
mod scaffold;
mod sealing;
mod support;
