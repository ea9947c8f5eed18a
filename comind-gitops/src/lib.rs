//! # comind-gitops
//!
//! Everything Comind does inside a Kubernetes cluster, whichever profile made it:
//! server-side apply of manifests through `kube` + `k8s-openapi`; the platform phases
//! (namespaces with quotas, limits, default-deny network policies and RBAC; ingress;
//! Sealed Secrets; ArgoCD with an app-of-apps root; monitoring; backup CronJobs); and
//! scaffolding of new applications as a Helm chart plus an ArgoCD Application.
//!
//! This crate is a placeholder in this release: the cluster phases land with the
//! platform work. It exists so that the workspace has its final shape and so that
//! the CLI's profiles can compose it when it does.
