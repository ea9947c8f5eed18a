//! A Git server over HTTPS for tests: Git's own `git http-backend` (the CGI program
//! behind Git hosting's smart HTTP) behind a small TLS server, with a certificate from
//! a throwaway CA and HTTP Basic authentication by one token. What a client proves
//! against it is Git's real smart HTTP protocol, not a mock of it.
//!
//! Each connection carries one request (`Connection: close`); the bodies a test's
//! pushes and fetches carry are small.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// One request the server answered: method, path with query, status, and whether it
/// carried the expected credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// `GET` or `POST`.
    pub method: String,
    /// The request's path and query.
    pub target: String,
    /// The status it answered.
    pub status: u16,
    /// Whether the request carried the right token.
    pub authorized: bool,
}

/// A running server; stopped when dropped.
pub struct GitHttpsServer {
    port: u16,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<Served>>>,
}

impl GitHttpsServer {
    /// Serves the repositories under `root` (`https://127.0.0.1:<port>/<dir>` is the
    /// repository `root/<dir>`), asking for `username` and `token` on every request.
    ///
    /// # Panics
    /// When the certificate cannot be made or the port cannot be bound (a test's
    /// setup failing), saying why.
    pub fn start(root: &Path, username: &str, token: &str) -> GitHttpsServer {
        match Self::try_start(root, username, token) {
            Ok(server) => server,
            Err(e) => panic!("cannot start the Git HTTPS server: {e}"),
        }
    }

    fn try_start(
        root: &Path,
        username: &str,
        token: &str,
    ) -> Result<GitHttpsServer, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Comind test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
            .signed_by(&leaf_key, &ca)?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem())?;

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "Basic {}",
            base64_encode(format!("{username}:{token}").as_bytes())
        );
        let root = root.to_path_buf();
        {
            let stop = Arc::clone(&stop);
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let config = Arc::clone(&config);
                    let served = Arc::clone(&served);
                    let root = root.clone();
                    let expected = expected.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, config, &root, &expected, &served);
                    });
                }
            });
        }
        Ok(GitHttpsServer {
            port,
            ca_file,
            _dir: dir,
            stop,
            served,
        })
    }

    /// The URL of repository `name` (a directory under the root).
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// The CA certificate (PEM) that signed the server's: trust it with `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The requests answered so far.
    pub fn served(&self) -> Vec<Served> {
        self.served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for GitHttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    root: &Path,
    expected: &str,
    served: &Mutex<Vec<Served>>,
) -> std::io::Result<()> {
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let mut reader = BufReader::new(&mut tls);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    drop(reader);
    let authorized = header("authorization").as_deref() == Some(expected);
    let (status, response_headers, response_body) = if authorized {
        cgi(root, &method, &target, header("content-type"), body)
    } else {
        (
            401,
            vec![(
                "WWW-Authenticate".to_string(),
                "Basic realm=\"git\"".to_string(),
            )],
            b"credentials, please\n".to_vec(),
        )
    };
    served
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Served {
            method,
            target,
            status,
            authorized,
        });
    let mut head = format!("HTTP/1.1 {status} Git\r\n");
    for (name, value) in response_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response_body.len()
    ));
    tls.write_all(head.as_bytes())?;
    tls.write_all(&response_body)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// Runs `git http-backend` for one request, as a web server runs the CGI program.
fn cgi(
    root: &Path,
    method: &str,
    target: &str,
    content_type: Option<String>,
    body: Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("CONTENT_TYPE", content_type.unwrap_or_default())
        // An authenticated user: http-backend lets only those push.
        .env("REMOTE_USER", "comind-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let Ok(mut child) = command.spawn() else {
        return (500, Vec::new(), b"cannot run git http-backend\n".to_vec());
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body);
    }
    let Ok(output) = child.wait_with_output() else {
        return (500, Vec::new(), b"git http-backend failed\n".to_vec());
    };
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return (500, Vec::new(), output.stderr);
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(&out[..end]).lines() {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("status") {
                status = value
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(500);
            } else {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    (status, headers, out[end + gap..].to_vec())
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
