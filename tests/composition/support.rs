//! The real peers these tests need, under the workspace's peer policy: when one is
//! missing, a test fails if `COMIND_REQUIRE_PEERS=1` (CI) and otherwise skips loudly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comind_core::config::Config;
use comind_core::{Bootstrap, Environment};

/// Whether a missing peer is a failure.
fn required() -> bool {
    std::env::var("COMIND_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// Reports a missing peer: panics when peers are required, else says it loudly.
pub fn missing(problem: &str) {
    assert!(!required(), "{problem} (COMIND_REQUIRE_PEERS=1)");
    eprintln!("SKIPPED (peer missing): {problem}; set COMIND_REQUIRE_PEERS=1 to fail instead");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:06x}", (nanos ^ std::process::id()) & 0xff_ffff)
}

/// Whether Docker answers and the local test images exist.
pub fn docker_ready() -> bool {
    let ok = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !ok(&["info"]) {
        missing("no Docker engine is reachable; run scripts/test-env/ensure-docker.sh");
        return false;
    }
    for image in LOCAL_IMAGES.map(|(_, image)| image) {
        if !ok(&["image", "inspect", image]) {
            missing(&format!(
                "test image {image} is missing; run scripts/test-env/build-test-images.sh"
            ));
            return false;
        }
    }
    true
}

const LOCAL_IMAGES: [(&str, &str); 4] = [
    ("postgres", "comind-test/postgres:r1"),
    ("object_store", "comind-test/minio:r1"),
    ("cache", "comind-test/redis:r1"),
    ("queue", "comind-test/elasticmq:r1"),
];

/// A local environment on the test images and free ports; purged on drop.
pub struct LocalEnv {
    pub bootstrap: Bootstrap,
    _state: tempfile::TempDir,
}

impl LocalEnv {
    pub fn new(extra_phases: Option<Arc<dyn comind_core::Provider>>) -> LocalEnv {
        let state = tempfile::tempdir().unwrap();
        let mut yaml = format!("environment: {}\nservices:\n", unique("par"));
        for (service, image) in LOCAL_IMAGES {
            yaml.push_str(&format!(
                "  {service}:\n    local:\n      image: {image}\n      port: {}\n",
                free_port()
            ));
            if service == "object_store" {
                yaml.push_str(&format!("      console_port: {}\n", free_port()));
            }
        }
        let config = Config::from_yaml_str(&yaml, "comind.yaml").unwrap();
        let mut bootstrap = Bootstrap::new(Environment::with_state_root(config, state.path()))
            .with_provider(comind_local::LocalProvider::new());
        if let Some(provider) = extra_phases {
            bootstrap = bootstrap.with_shared_provider(provider);
        }
        LocalEnv {
            bootstrap,
            _state: state,
        }
    }
}

impl Drop for LocalEnv {
    fn drop(&mut self) {
        let purge = comind_core::engine::RunOptions {
            destroy: comind_core::DestroyOptions { purge: true },
            ..Default::default()
        };
        let bootstrap = &self.bootstrap;
        // Drop may run inside the test's runtime, where blocking is not allowed: clean
        // up on a thread with a runtime of its own.
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Ok(runtime) = tokio::runtime::Runtime::new() {
                    let _ = runtime.block_on(bootstrap.down(&purge, &Default::default()));
                }
            });
        });
    }
}

/// A moto_server of the test's own, started through the test launcher that patches
/// moto's known gaps; killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.ends_with(b"200")
}

impl Moto {
    pub fn start() -> Option<Moto> {
        let launcher =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-env/moto_launcher.py");
        let port = free_port();
        let mut child = match Command::new("python3")
            .arg(&launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                missing(&format!(
                    "cannot start moto_server: {e}; run scripts/test-env/ensure-moto.sh"
                ));
                return None;
            }
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if answers(port) {
                return Some(Moto {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                missing(&format!(
                    "moto_server exited with {status}; run scripts/test-env/ensure-moto.sh"
                ));
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        missing("moto_server did not answer within 30 s");
        None
    }

    /// A bootstrap of an AWS environment on this server.
    pub fn bootstrap(&self, state: &Path) -> Bootstrap {
        use aws_config::{BehaviorVersion, Region, SdkConfig};
        use aws_credential_types::Credentials;
        use aws_credential_types::provider::SharedCredentialsProvider;

        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "moto",
            )))
            .build();
        let yaml = format!("environment: {}\nprofile: aws\n", unique("par"));
        let config = Config::from_yaml_str(&yaml, "comind.yaml").unwrap();
        Bootstrap::new(Environment::with_state_root(config, state))
            .with_provider(comind_aws::AwsProvider::from_sdk_config(sdk))
    }
}
