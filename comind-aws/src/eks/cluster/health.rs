//! EKS health issues of the cluster and the node group, for errors and progress.

use aws_sdk_eks::types::{Cluster, Nodegroup};

pub(super) fn cluster_issues(cluster: &Cluster) -> Option<String> {
    let issues = cluster.health().map(|h| h.issues()).unwrap_or_default();
    joined_issues(
        issues
            .iter()
            .map(|i| (i.code().map(|c| c.as_str()), i.message())),
    )
}

pub(super) fn node_group_issues(ng: &Nodegroup) -> Option<String> {
    let issues = ng.health().map(|h| h.issues()).unwrap_or_default();
    joined_issues(
        issues
            .iter()
            .map(|i| (i.code().map(|c| c.as_str()), i.message())),
    )
}

/// EKS health issues as `code: message; ...`, or `None` when there are none.
fn joined_issues<'a>(
    issues: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Option<String> {
    let issues: Vec<String> = issues
        .map(|(code, message)| format!("{}: {}", code.unwrap_or("issue"), message.unwrap_or("")))
        .collect();
    (!issues.is_empty()).then(|| issues.join("; "))
}
