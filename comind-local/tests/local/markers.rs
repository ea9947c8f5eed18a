//! Data written and read back with the real clients of each service, through the
//! outputs an application would get: a table row, an S3 object, a Redis key, and
//! for the queue a message plus what the queue server keeps in its volume.

use aws_sdk_sqs::types::QueueAttributeName;
use bollard::Docker;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use comind_core::Outputs;
use futures_util::StreamExt;

use crate::support;

pub async fn write_postgres(outputs: &Outputs, marker: &str) {
    let client = support::postgres(outputs).await;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS comind_marker (value text PRIMARY KEY)")
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO comind_marker (value) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&marker],
        )
        .await
        .unwrap();
}

pub async fn has_postgres(outputs: &Outputs, marker: &str) -> bool {
    let client = support::postgres(outputs).await;
    match client
        .query_opt(
            "SELECT value FROM comind_marker WHERE value = $1",
            &[&marker],
        )
        .await
    {
        Ok(row) => row.is_some(),
        // No table: a fresh database.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => false,
        Err(e) => panic!("reading the marker row: {e}"),
    }
}

fn first_bucket(outputs: &Outputs) -> String {
    outputs
        .require("S3_BUCKETS")
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

/// Calls `op` until it does not fail with a 5xx, for at most 30 s. The SeaweedFS
/// stand-in answers bucket calls as soon as its S3 gateway is up, but object calls
/// fail with `InternalError` until its volume server has registered, a moment later;
/// MinIO serves both from the start.
async fn retry_5xx<T, E, F, Fut>(mut op: F) -> Result<T, aws_sdk_s3::error::SdkError<E>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, aws_sdk_s3::error::SdkError<E>>>,
{
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        match op().await {
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| r.status().is_server_error())
                    && started.elapsed() < std::time::Duration::from_secs(30) =>
            {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

pub async fn write_s3(outputs: &Outputs, marker: &str) {
    let s3 = support::s3(outputs);
    retry_5xx(|| {
        s3.put_object()
            .bucket(first_bucket(outputs))
            .key(format!("markers/{marker}"))
            .body(aws_sdk_s3::primitives::ByteStream::from(
                marker.as_bytes().to_vec(),
            ))
            .send()
    })
    .await
    .unwrap();
}

pub async fn has_s3(outputs: &Outputs, marker: &str) -> bool {
    let s3 = support::s3(outputs);
    let got = retry_5xx(|| {
        s3.get_object()
            .bucket(first_bucket(outputs))
            .key(format!("markers/{marker}"))
            .send()
    })
    .await;
    match got {
        Ok(object) => {
            let body = object.body.collect().await.unwrap().into_bytes();
            body.as_ref() == marker.as_bytes()
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => false,
        Err(e) => panic!(
            "reading the marker object: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        ),
    }
}

pub async fn write_redis(outputs: &Outputs, marker: &str) {
    let mut redis = support::redis(outputs).await;
    let _: () = redis::cmd("SET")
        .arg(marker)
        .arg("1")
        .query_async(&mut redis)
        .await
        .unwrap();
}

pub async fn has_redis(outputs: &Outputs, marker: &str) -> bool {
    let mut redis = support::redis(outputs).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(marker)
        .query_async(&mut redis)
        .await
        .unwrap();
    exists == 1
}

/// Asserts that every configured queue exists with a redrive policy to its
/// dead-letter queue after `max_receive_count` receives, as a client sees them.
pub async fn assert_queues(outputs: &Outputs, max_receive_count: u64) {
    let sqs = support::sqs(outputs);
    for name in outputs.require("SQS_QUEUES").unwrap().split(',') {
        let suffix = comind_core::output::key_suffix(name);
        let url = outputs.require(&format!("SQS_QUEUE_URL_{suffix}")).unwrap();
        let dlq_url = outputs.require(&format!("SQS_DLQ_URL_{suffix}")).unwrap();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let policy = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .unwrap_or_else(|| panic!("queue {url} has no redrive policy"));
        let policy: serde_json::Value = serde_json::from_str(policy).unwrap();
        let dlq_name = dlq_url.rsplit('/').next().unwrap();
        assert!(
            policy["deadLetterTargetArn"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{dlq_name}")),
            "{policy}"
        );
        let count = match &policy["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64().unwrap(),
            serde_json::Value::String(s) => s.parse().unwrap(),
            other => panic!("maxReceiveCount is {other}"),
        };
        assert_eq!(count, max_receive_count);
        sqs.get_queue_attributes()
            .queue_url(dlq_url)
            .send()
            .await
            .unwrap();
    }
}

fn first_queue_url(outputs: &Outputs) -> String {
    let name = outputs
        .require("SQS_QUEUES")
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let suffix = comind_core::output::key_suffix(&name);
    outputs
        .require(&format!("SQS_QUEUE_URL_{suffix}"))
        .unwrap()
        .to_string()
}

pub async fn send_message(outputs: &Outputs, body: &str) {
    support::sqs(outputs)
        .send_message()
        .queue_url(first_queue_url(outputs))
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// Whether a message with `body` waits in the first queue (looked at without
/// consuming it: visibility timeout 0).
pub async fn has_message(outputs: &Outputs, body: &str) -> bool {
    let received = support::sqs(outputs)
        .receive_message()
        .queue_url(first_queue_url(outputs))
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap();
    received.messages().iter().any(|m| m.body() == Some(body))
}

/// Writes `marker` as a file into the volume mounted at `/data` of `container`.
pub async fn write_volume_file(docker: &Docker, container: &str, marker: &str) {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(marker.len() as u64);
    header.set_mode(0o644);
    archive
        .append_data(&mut header, marker, marker.as_bytes())
        .unwrap();
    let archive = archive.into_inner().unwrap();
    docker
        .upload_to_container(
            container,
            Some(UploadToContainerOptionsBuilder::new().path("/data").build()),
            bollard::body_full(archive.into()),
        )
        .await
        .unwrap();
}

/// Whether the file `marker` is in the volume mounted at `/data` of `container`.
pub async fn has_volume_file(docker: &Docker, container: &str, marker: &str) -> bool {
    let path = format!("/data/{marker}");
    let mut stream = docker.download_from_container(
        container,
        Some(
            DownloadFromContainerOptionsBuilder::new()
                .path(&path)
                .build(),
        ),
    );
    match stream.next().await {
        Some(Ok(_)) => true,
        Some(Err(e))
            if matches!(
                &e,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                }
            ) =>
        {
            false
        }
        Some(Err(e)) => panic!("reading {path} from {container}: {e}"),
        None => false,
    }
}
