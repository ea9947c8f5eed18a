//! Git's smart HTTP protocol for libgit2, spoken with the HTTPS client Comind already
//! builds on (hyper and rustls, the system's roots): `app deploy` pushes to an
//! `https://` remote without OpenSSL, curl or the `git` binary.
//!
//! libgit2 keeps the Git protocol (negotiation, packs, the result); this module moves
//! its bytes. Each of libgit2's actions is one HTTP exchange, as Git's stateless RPC
//! defines it: `GET <repo>/info/refs?service=git-<service>` for the reference
//! advertisement, `POST <repo>/git-<service>` carrying what libgit2 wrote. A request is
//! sent when libgit2 first reads its answer; the answer is read whole (a push's result
//! and a GitOps repository's packs are small).
//!
//! The token comes from the deploy's [`Session`](super::Session), never from the URL.

use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use comind_core::Secret;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};

use super::{Failure, SessionState};
use http_body_util::{BodyExt as _, Full};

/// How long one exchange may take, from connecting to the last byte of the answer.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Redirects followed for the reference advertisement (a POST is never redirected).
const MAX_REDIRECTS: usize = 5;

/// Basic credentials for an HTTPS remote: a user name and an access token.
#[derive(Clone)]
pub(crate) struct BasicAuth {
    pub(crate) username: String,
    pub(crate) token: Secret,
}

impl BasicAuth {
    fn header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.token.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// One remote's transport: the session's credential, and the base URL the server
/// redirected to (used for the POST that follows the advertisement).
pub(super) struct HttpSubtransport {
    auth: Option<BasicAuth>,
    failure: Arc<Mutex<Option<Failure>>>,
    redirected: Arc<Mutex<Option<String>>>,
}

impl HttpSubtransport {
    /// The transport of a remote opened under `session` (none: no credential).
    pub(super) fn new(session: Option<&SessionState>) -> HttpSubtransport {
        HttpSubtransport {
            auth: session.and_then(|s| s.basic.clone()),
            failure: session.map_or_else(Arc::default, |s| Arc::clone(&s.failure)),
            redirected: Arc::default(),
        }
    }
}

impl SmartSubtransport for HttpSubtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let base = self
            .redirected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| url.trim_end_matches('/').to_string());
        let (service, advertisement) = match action {
            Service::UploadPackLs => ("upload-pack", true),
            Service::UploadPack => ("upload-pack", false),
            Service::ReceivePackLs => ("receive-pack", true),
            Service::ReceivePack => ("receive-pack", false),
        };
        Ok(Box::new(Exchange {
            base,
            service,
            advertisement,
            auth: self.auth.clone(),
            failure: Arc::clone(&self.failure),
            redirected: Arc::clone(&self.redirected),
            request: Vec::new(),
            answer: None,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// One HTTP exchange: what libgit2 writes is the request's body; the first read sends
/// it and hands back the answer.
struct Exchange {
    base: String,
    service: &'static str,
    advertisement: bool,
    auth: Option<BasicAuth>,
    failure: Arc<Mutex<Option<Failure>>>,
    redirected: Arc<Mutex<Option<String>>>,
    request: Vec<u8>,
    answer: Option<Cursor<Vec<u8>>>,
}

impl Write for Exchange {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.request.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for Exchange {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.answer.is_none() {
            let answered = self.send();
            match answered {
                Ok(body) => self.answer = Some(Cursor::new(body)),
                Err(failure) => return Err(super::failed(&self.failure, failure)),
            }
        }
        match &mut self.answer {
            Some(answer) => answer.read(buf),
            None => Ok(0),
        }
    }
}

impl Exchange {
    /// Sends the request and reads the answer, on a thread of its own with a runtime
    /// of its own: libgit2 calls this synchronously, from whatever thread pushes, which
    /// may be one of a runtime's blocking threads, where blocking on that runtime is
    /// not allowed.
    fn send(&mut self) -> Result<Vec<u8>, Failure> {
        let request = Request {
            base: self.base.clone(),
            service: self.service,
            advertisement: self.advertisement,
            auth: self.auth.clone(),
            body: std::mem::take(&mut self.request),
        };
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| {
                            Failure::Unreachable(format!("cannot start the HTTP client: {e}"))
                        })?;
                    runtime.block_on(async {
                        tokio::time::timeout(EXCHANGE_TIMEOUT, request.exchange())
                            .await
                            .unwrap_or_else(|_| {
                                Err(Failure::Unreachable(format!(
                                    "no complete answer in {} s",
                                    EXCHANGE_TIMEOUT.as_secs()
                                )))
                            })
                    })
                })
                .join()
        });
        let (body, base) = outcome.unwrap_or_else(|_| {
            Err(Failure::Unreachable(
                "the HTTP client stopped unexpectedly".to_string(),
            ))
        })?;
        if base != self.base {
            *self
                .redirected
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(base);
        }
        Ok(body)
    }
}

/// What one exchange sends.
struct Request {
    base: String,
    service: &'static str,
    advertisement: bool,
    auth: Option<BasicAuth>,
    body: Vec<u8>,
}

impl Request {
    /// The answer's body, and the repository's base URL after redirects.
    async fn exchange(self) -> Result<(Vec<u8>, String), Failure> {
        let client = crate::https::client::<Full<Bytes>>(true).map_err(Failure::Unreachable)?;
        let service = format!("git-{}", self.service);
        let mut base = self.base.clone();
        for _ in 0..=MAX_REDIRECTS {
            let url = if self.advertisement {
                format!("{base}/info/refs?service={service}")
            } else {
                format!("{base}/{service}")
            };
            let mut request = if self.advertisement {
                hyper::Request::get(&url)
            } else {
                hyper::Request::post(&url)
                    .header(
                        hyper::header::CONTENT_TYPE,
                        format!("application/x-{service}-request"),
                    )
                    .header(
                        hyper::header::ACCEPT,
                        format!("application/x-{service}-result"),
                    )
            }
            // Git servers (GitHub's among them) tell Git clients by this prefix.
            .header(
                hyper::header::USER_AGENT,
                concat!("git/2.0 (comind/", env!("CARGO_PKG_VERSION"), ")"),
            );
            if let Some(auth) = &self.auth {
                request = request.header(hyper::header::AUTHORIZATION, auth.header());
            }
            let request = request
                .body(Full::new(Bytes::from(self.body.clone())))
                .map_err(|e| {
                    Failure::NotGit(format!("`{}` is not a usable URL: {e}", self.base))
                })?;
            let response = client
                .request(request)
                .await
                .map_err(|e| Failure::Unreachable(crate::https::with_causes(&e)))?;
            let status = response.status();
            match status.as_u16() {
                401 => return Err(Failure::Unauthorized),
                403 => return Err(Failure::Forbidden),
                404 => return Err(Failure::NotFound("no repository there (404)".to_string())),
                301 | 302 | 303 | 307 | 308 if self.advertisement => {
                    base = redirect(&url, &base, response.headers())?;
                    continue;
                }
                _ if !status.is_success() => {
                    return Err(Failure::NotGit(format!("the server answered {status}")));
                }
                _ => {}
            }
            let expected = if self.advertisement {
                format!("application/x-{service}-advertisement")
            } else {
                format!("application/x-{service}-result")
            };
            let content_type = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if !content_type.starts_with(&expected) {
                return Err(Failure::NotGit(format!(
                    "the server does not speak Git's smart HTTP protocol (it answered {})",
                    if content_type.is_empty() {
                        "without a content type".to_string()
                    } else {
                        format!("`{content_type}`")
                    }
                )));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::Unreachable(format!("the answer broke off: {e}")))?;
            return Ok((body.to_bytes().to_vec(), base));
        }
        Err(Failure::NotGit(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// The repository's base URL after a redirect of `url` (which was `base` plus the
/// advertisement's path). Only within the same origin: a redirect elsewhere (or from
/// HTTPS to HTTP) would send the token to another server, or in clear.
fn redirect(url: &str, base: &str, headers: &hyper::HeaderMap) -> Result<String, Failure> {
    let location = headers
        .get(hyper::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| Failure::NotGit("a redirect without a Location".to_string()))?;
    let target = url::Url::parse(url)
        .and_then(|u| u.join(location))
        .map_err(|e| Failure::NotGit(format!("a redirect to `{location}`: {e}")))?;
    // Only within the same scheme, host and port: the request carries the token.
    let origin = |u: &url::Url| {
        (
            u.scheme().to_string(),
            u.host_str().map(str::to_string),
            u.port_or_known_default(),
        )
    };
    let from = url::Url::parse(url).map_err(|e| Failure::NotGit(format!("`{url}`: {e}")))?;
    if origin(&from) != origin(&target) {
        return Err(Failure::NotGit(format!(
            "a redirect to {}, another origin, which is not followed (it would carry the token)",
            target.origin().ascii_serialization()
        )));
    }
    let text = target.to_string();
    let suffix = url.strip_prefix(base).unwrap_or_default();
    Ok(text
        .strip_suffix(suffix)
        .map_or_else(|| text.clone(), str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_moves_the_base_and_keeps_the_origin() {
        let headers = |location: &str| {
            let mut h = hyper::HeaderMap::new();
            h.insert(hyper::header::LOCATION, location.parse().unwrap());
            h
        };
        let base = "https://git.example.com/team/gitops";
        let url = format!("{base}/info/refs?service=git-receive-pack");
        assert_eq!(
            redirect(
                &url,
                base,
                &headers(
                    "https://git.example.com/team/gitops.git/info/refs?service=git-receive-pack"
                )
            )
            .unwrap(),
            "https://git.example.com/team/gitops.git"
        );
        assert_eq!(
            redirect(
                &url,
                base,
                &headers("/moved/gitops/info/refs?service=git-receive-pack")
            )
            .unwrap(),
            "https://git.example.com/moved/gitops"
        );
        assert!(matches!(
            redirect(
                &url,
                base,
                &headers("http://git.example.com/team/gitops/info/refs?service=git-receive-pack")
            ),
            Err(Failure::NotGit(_))
        ));
        assert!(matches!(
            redirect(
                &url,
                base,
                &headers(
                    "https://elsewhere.example.com/team/gitops/info/refs?service=git-receive-pack"
                )
            ),
            Err(Failure::NotGit(_))
        ));
    }

    #[test]
    fn the_basic_header_carries_the_user_and_the_token() {
        let auth = BasicAuth {
            username: "git".into(),
            token: Secret::new("t0ken"),
        };
        assert_eq!(auth.header(), "Basic Z2l0OnQwa2Vu");
    }
}
