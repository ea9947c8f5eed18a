//! A fault-injecting HTTP proxy in front of `moto_server`: the AWS endpoint as a test
//! wants it to misbehave.
//!
//! [`FaultProxy::start`] listens on a free 127.0.0.1 port and forwards every request to
//! the moto server it was given, unchanged (headers, signature and body as sent; the
//! `Host` header too, so SQS queue URLs point at the proxy). A client is pointed at it
//! like at moto itself: [`FaultProxy::sdk_config`] in process, [`FaultProxy::aws_env`]
//! for another process.
//!
//! # What it knows about each request
//!
//! Every request is named by its AWS service and operation, the way AWS routes it:
//!
//! - the service is the one of the SigV4 credential scope (`Authorization` header, or
//!   `X-Amz-Credential` of a presigned URL): `ec2`, `rds`, `elasticache`, `iam`, `sts`,
//!   `sqs`, `eks`, `s3`...;
//! - query protocols (EC2, RDS, ElastiCache, IAM, STS): the `Action=` of the form body
//!   (or of the query string);
//! - JSON protocols (SQS): the `X-Amz-Target` header (`AmazonSQS.CreateQueue`);
//! - REST protocols: method and path, for EKS (`POST /clusters` is `CreateCluster`)
//!   and path-style S3 (`PUT /bucket` is `CreateBucket`, `PUT /bucket?tagging` is
//!   `PutBucketTagging`, the SDK's `x-id` query parameter wins when present). A path it
//!   does not know is named `"<METHOD> <path>"`.
//!
//! It also keeps the SDK's attempt number (`amz-sdk-request: attempt=2; max=3`) and
//! invocation id, so a test can tell the SDK's own retries from new calls.
//!
//! # Faults
//!
//! A [`Rule`] says which calls get which [`Fault`]: "the first N calls of operation X"
//! ([`Rule::first`]) or "the next N calls, whatever they are" ([`Rule::next`]),
//! optionally only after leaving the first K alone
//! ([`Rule::after`]) and only on one service ([`Rule::on`]). Each rule counts the
//! matching calls it sees from the moment it is added; the first rule that applies to
//! a call decides its fate, and calls no rule applies to are forwarded.
//!
//! - [`Fault::Throttle`]: answered at once with the service's own throttling error
//!   (EC2 `RequestLimitExceeded` 503, query `Throttling` 400, JSON
//!   `ThrottlingException` 400, EKS `ThrottlingException` 429, S3 `SlowDown` 503);
//!   moto never sees it.
//! - [`Fault::Unavailable`]: answered with HTTP 503 and the service's
//!   `ServiceUnavailable`-style error; moto never sees it.
//! - [`Fault::ResetBeforeForwarding`]: the client's connection is reset (TCP RST)
//!   without forwarding anything: AWS never saw the request.
//! - [`Fault::LoseAnswer`]: forwarded, moto acts and answers, then the client's
//!   connection is reset instead of replying: the call took effect but its caller
//!   cannot know.
//! - [`Fault::Hold`]: nothing is forwarded until the test decides. [`FaultProxy::held`]
//!   waits until such a call is being held (no sleeps: it returns the moment the call
//!   arrives; [`FaultProxy::held_any`] for a call of any operation), and the [`Held`]
//!   it returns forwards the call ([`Held::forward`], as if
//!   AWS acted on it now, whether or not its caller is still alive) or drops it
//!   ([`Held::drop_call`], the client's connection is reset). A test can kill the
//!   calling process between the two: a process killed with a request in flight.
//!
//! # What it saw
//!
//! [`FaultProxy::calls`] lists every call in arrival order, each with what the proxy
//! did ([`Outcome`]); [`FaultProxy::count`] counts one operation. Tests assert on
//! those: "`CreateVpc` was sent once", "no `PutBucketTagging` was made".
//!
//! ```no_run
//! # async fn demo() {
//! use comind_test_support::aws_faults::{Fault, FaultProxy, Rule};
//! use comind_test_support::moto::Moto;
//!
//! let moto = Moto::start().unwrap();
//! let proxy = FaultProxy::start(&moto).unwrap();
//! proxy.inject(Rule::first(1, "CreateVpc", Fault::LoseAnswer));
//! // Any AWS SDK client built from this configuration goes through the proxy:
//! // `aws_sdk_ec2::Client::new(&config)`.
//! let config = proxy.sdk_config();
//! # let _ = config;
//! // ... run the code under test, then:
//! assert_eq!(proxy.count("CreateVpc"), 1);
//! # }
//! ```
//!
//! The proxy runs on a thread and Tokio runtime of its own, so it serves any test,
//! synchronous or asynchronous, and outlives a child process it is serving; it stops
//! when dropped, resetting every call it still holds.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};

use crate::moto::Moto;
use crate::peers::Missing;

/// How long [`FaultProxy::held`] waits for a call to be held before the test fails.
pub const HOLD_WAIT: Duration = Duration::from_secs(180);

/// What the proxy does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with the service's throttling error; nothing is forwarded.
    Throttle,
    /// Answer with HTTP 503 and the service's unavailable error; nothing is forwarded.
    Unavailable,
    /// Reset the client's connection; nothing is forwarded.
    ResetBeforeForwarding,
    /// Forward the call, let moto act, then reset the client's connection instead of
    /// answering.
    LoseAnswer,
    /// Keep the call until the test forwards or drops it (see [`FaultProxy::held`]).
    Hold,
}

/// Which calls get a fault: the first `times` calls of an operation, or of any
/// operation (optionally after `skip` of them, optionally on one service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: any operation.
    operation: Option<String>,
    service: Option<String>,
    skip: usize,
    times: usize,
    fault: Fault,
}

impl Rule {
    /// The first `times` calls of `operation` (as AWS names it: `CreateVpc`) get
    /// `fault`.
    pub fn first(times: usize, operation: &str, fault: Fault) -> Rule {
        Rule {
            operation: Some(operation.to_string()),
            service: None,
            skip: 0,
            times,
            fault,
        }
    }

    /// The next `times` calls, whatever their operation, get `fault`: to stop a client
    /// at the call right after one the test holds ("what comes after CreateBucket").
    pub fn next(times: usize, fault: Fault) -> Rule {
        Rule {
            operation: None,
            service: None,
            skip: 0,
            times,
            fault,
        }
    }

    /// Leaves the first `skip` matching calls alone: the fault goes to the calls after
    /// them.
    #[must_use]
    pub fn after(mut self, skip: usize) -> Rule {
        self.skip = skip;
        self
    }

    /// Only calls to `service` (the SigV4 service name: `rds`, `elasticache`), for
    /// operations several services share (`ListTagsForResource`).
    #[must_use]
    pub fn on(mut self, service: &str) -> Rule {
        self.service = Some(service.to_string());
        self
    }

    fn matches(&self, service: &str, operation: &str) -> bool {
        self.operation.as_deref().is_none_or(|o| o == operation)
            && self.service.as_deref().is_none_or(|s| s == service)
    }
}

/// What the proxy did with a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still being handled (forwarded, and moto has not answered yet).
    InFlight,
    /// Forwarded; moto answered with this HTTP status, which the client got.
    Forwarded(u16),
    /// Answered with the service's throttling error.
    Throttled,
    /// Answered with HTTP 503.
    Unavailable,
    /// The connection was reset; nothing was forwarded.
    ResetBeforeForwarding,
    /// Forwarded (moto answered with this status), then the connection was reset
    /// instead of answering.
    AnswerLost(u16),
    /// Held, waiting for the test.
    Held,
    /// Held, then dropped by the test (or the proxy stopped): never forwarded.
    Dropped,
    /// Moto could not be reached; the client got HTTP 502.
    UpstreamFailed(String),
}

impl Outcome {
    /// Whether moto received the call (it may have acted on it).
    pub fn reached_aws(&self) -> bool {
        matches!(self, Outcome::Forwarded(_) | Outcome::AnswerLost(_))
    }
}

/// One call the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The SigV4 service (`ec2`, `s3`...), empty for an unsigned request.
    pub service: String,
    /// The operation, as AWS names it (`CreateVpc`).
    pub operation: String,
    /// The SDK's attempt number of this call (1 for the first try), if it said.
    pub attempt: Option<u32>,
    /// The SDK's invocation id: the same for every attempt of one operation call.
    pub invocation: Option<String>,
    /// What the proxy did.
    pub outcome: Outcome,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.operation)?;
        if let Some(attempt) = self.attempt {
            write!(f, " (attempt {attempt})")?;
        }
        write!(f, " -> {:?}", self.outcome)
    }
}

/// A running proxy in front of a moto server; stopped when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url())
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `moto`.
    ///
    /// # Errors
    /// A [`Missing`] peer when no port can be bound or no runtime started.
    pub fn start(moto: &Moto) -> Result<FaultProxy, Missing> {
        Self::start_for(SocketAddr::from(([127, 0, 0, 1], moto.port())))
    }

    /// Starts a proxy in front of the HTTP server at `upstream`.
    ///
    /// # Errors
    /// A [`Missing`] peer when no port can be bound or no runtime started.
    pub fn start_for(upstream: SocketAddr) -> Result<FaultProxy, Missing> {
        let unavailable = |why: String| {
            Missing::new(
                format!("the AWS fault proxy cannot be started: {why}"),
                "check that 127.0.0.1 ports can be bound",
            )
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("no Tokio runtime: {e}")))?;
        // Port 0: the kernel picks a free port and the proxy holds it from then on, so
        // nothing can take it in between. Bound here (not in the runtime) because the
        // caller may itself be running in a runtime, where blocking on one is refused.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| unavailable(format!("cannot bind 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| unavailable(format!("no local address: {e}")))?
            .port();
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State::default()),
            changed,
        });
        let (stop, stopped) = oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("aws-fault-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, serving, stopped).await,
                        Err(e) => eprintln!("the AWS fault proxy cannot listen: {e}"),
                    }
                });
            })
            .map_err(|e| unavailable(format!("no thread: {e}")))?;
        Ok(FaultProxy {
            shared,
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The standard AWS variables that point another process at the proxy, as
    /// [`Moto::aws_env`] does for moto.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        crate::moto::aws_env_for(&self.url())
    }

    /// An AWS SDK configuration for the proxy (region and credentials of
    /// [`crate::moto`]).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::moto::sdk_config_for(&self.url())
    }

    /// Adds a rule; calls from now on are matched against it.
    pub fn inject(&self, rule: Rule) {
        self.shared.lock().rules.push((rule, 0));
    }

    /// Removes every rule; calls from now on are forwarded (held calls stay held).
    pub fn clear_rules(&self) {
        self.shared.lock().rules.clear();
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls of `operation` so far.
    pub fn calls_of(&self, operation: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.operation == operation)
            .collect()
    }

    /// How many calls of `operation` the proxy saw (every attempt counts).
    pub fn count(&self, operation: &str) -> usize {
        self.calls_of(operation).len()
    }

    /// Forgets the calls so far (rules and held calls stay).
    pub fn clear_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// Waits until a call of `operation` is held (by a [`Fault::Hold`] rule), and hands
    /// it over; each held call is handed over once, in arrival order.
    ///
    /// # Panics
    /// When no such call arrives within [`HOLD_WAIT`] (the message lists the calls
    /// seen), or when the proxy stopped.
    pub async fn held(&self, operation: &str) -> Held {
        self.wait_held(Some(operation)).await
    }

    /// Waits until any call is held, whatever its operation (see [`Rule::next`]), and
    /// hands it over.
    ///
    /// # Panics
    /// As [`FaultProxy::held`].
    pub async fn held_any(&self) -> Held {
        self.wait_held(None).await
    }

    async fn wait_held(&self, operation: Option<&str>) -> Held {
        let what = operation.map_or_else(|| "any".to_string(), |o| format!("`{o}`"));
        let mut changes = self.shared.changed.subscribe();
        let wait = async {
            loop {
                if let Some(held) = self.shared.claim(operation) {
                    return held;
                }
                if changes.changed().await.is_err() {
                    panic!("the AWS fault proxy stopped while waiting for a held {what} call");
                }
            }
        };
        match tokio::time::timeout(HOLD_WAIT, wait).await {
            Ok(held) => held,
            Err(_) => panic!(
                "no {what} call was held within {} s; calls seen: {}",
                HOLD_WAIT.as_secs(),
                self.calls()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A call the proxy holds: nothing reached moto yet.
///
/// Dropping it drops the call (as [`Held::drop_call`]).
#[derive(Debug)]
pub struct Held {
    call: Call,
    release: Option<oneshot::Sender<Release>>,
    done: oneshot::Receiver<Outcome>,
}

impl Held {
    /// The call as it arrived.
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// Forwards the call to moto now and returns what happened once moto answered: the
    /// answer goes to the client if it is still connected.
    pub async fn forward(mut self) -> Outcome {
        self.finish(Release::Forward).await
    }

    /// Drops the call: it never reaches moto, and the client's connection is reset.
    pub async fn drop_call(mut self) -> Outcome {
        self.finish(Release::Drop).await
    }

    async fn finish(&mut self, how: Release) -> Outcome {
        if let Some(release) = self.release.take() {
            let _ = release.send(how);
        }
        (&mut self.done)
            .await
            .unwrap_or_else(|_| Outcome::UpstreamFailed("the proxy stopped".to_string()))
    }
}

/// What the test decided about a held call.
#[derive(Debug, Clone, Copy)]
enum Release {
    Forward,
    Drop,
}

/// A held call not yet handed to the test.
struct Waiting {
    operation: String,
    call: usize,
    release: oneshot::Sender<Release>,
    done: oneshot::Receiver<Outcome>,
}

#[derive(Default)]
struct State {
    /// Each rule with how many matching calls it has seen.
    rules: Vec<(Rule, usize)>,
    calls: Vec<Call>,
    waiting: VecDeque<Waiting>,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    /// Bumped on every change, for [`FaultProxy::held`].
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Tests read the state after a panic elsewhere; it stays consistent because
        // every change is a single push or assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Records `call` and decides its fault; returns its index.
    fn arrive(&self, call: Call) -> (usize, Option<Fault>) {
        let mut state = self.lock();
        let mut fault = None;
        for (rule, seen) in &mut state.rules {
            if !rule.matches(&call.service, &call.operation) {
                continue;
            }
            *seen += 1;
            if fault.is_none() && *seen > rule.skip && *seen <= rule.skip + rule.times {
                fault = Some(rule.fault);
            }
        }
        state.calls.push(call);
        let index = state.calls.len() - 1;
        drop(state);
        self.bump();
        (index, fault)
    }

    fn set(&self, index: usize, outcome: Outcome) {
        if let Some(call) = self.lock().calls.get_mut(index) {
            call.outcome = outcome;
        }
        self.bump();
    }

    fn hold(&self, waiting: Waiting) {
        let index = waiting.call;
        self.lock().waiting.push_back(waiting);
        self.set(index, Outcome::Held);
    }

    fn claim(&self, operation: Option<&str>) -> Option<Held> {
        let mut state = self.lock();
        let at = state
            .waiting
            .iter()
            .position(|w| operation.is_none_or(|o| w.operation == o))?;
        let waiting = state.waiting.remove(at)?;
        let call = state.calls.get(waiting.call).cloned()?;
        Some(Held {
            call,
            release: Some(waiting.release),
            done: waiting.done,
        })
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(connection(stream, shared.clone()));
                }
            }
        }
    }
}

/// Serves one client connection until it closes or a fault resets it.
async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    // A second handle on the socket, kept to reset it: hyper owns the stream, and a
    // reset needs SO_LINGER 0 on the last descriptor to close.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(control) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = reset.clone();
        hyper::service::service_fn(move |request| handle(request, shared.clone(), reset.clone()))
    };
    let served =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = served => {}
        () = reset.notified() => {
            let _ = socket2::SockRef::from(&control).set_linger(Some(Duration::ZERO));
        }
    }
    // `served` (hyper's descriptor) is gone; closing the last one sends the RST.
    drop(control);
}

type Answer = Response<Full<Bytes>>;

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    reset: Arc<Notify>,
) -> Result<Answer, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            reset.notify_one();
            return std::future::pending().await;
        }
    };
    let named = name_request(&parts.method, &parts.uri, &parts.headers, &body);
    let call = Call {
        service: named.service.clone(),
        operation: named.operation.clone(),
        attempt: attempt_of(&parts.headers),
        invocation: header(&parts.headers, "amz-sdk-invocation-id").map(str::to_string),
        outcome: Outcome::InFlight,
    };
    let (index, fault) = shared.arrive(call);
    let upstream = shared.upstream;
    let forward_it = {
        let parts = parts.clone();
        move || forward(upstream, parts, body)
    };
    match fault {
        None => {
            let answer = forward_it().await;
            shared.set(index, outcome_of(&answer, Outcome::Forwarded));
            Ok(answer.unwrap_or_else(|e| bad_gateway(&e)))
        }
        Some(Fault::Throttle) => {
            shared.set(index, Outcome::Throttled);
            Ok(error_answer(&named, ErrorKind::Throttling))
        }
        Some(Fault::Unavailable) => {
            shared.set(index, Outcome::Unavailable);
            Ok(error_answer(&named, ErrorKind::Unavailable))
        }
        Some(Fault::ResetBeforeForwarding) => {
            shared.set(index, Outcome::ResetBeforeForwarding);
            reset.notify_one();
            std::future::pending().await
        }
        Some(Fault::LoseAnswer) => {
            // In a task of its own: moto must act even if hyper gives up on this
            // connection meanwhile.
            let answered = tokio::spawn(forward_it()).await;
            let outcome = match answered {
                Ok(answer) => outcome_of(&answer, Outcome::AnswerLost),
                Err(e) => Outcome::UpstreamFailed(e.to_string()),
            };
            shared.set(index, outcome);
            reset.notify_one();
            std::future::pending().await
        }
        Some(Fault::Hold) => {
            let (release, released) = oneshot::channel();
            let (done_tx, done) = oneshot::channel();
            let (answer_tx, answer_rx) = oneshot::channel();
            // The held call lives in a task of its own: the test may forward it after
            // its client died, and moto must still act on it then.
            let task_shared = shared.clone();
            tokio::spawn(async move {
                let outcome = match released.await {
                    Ok(Release::Forward) => {
                        let answer = forward_it().await;
                        let outcome = outcome_of(&answer, Outcome::Forwarded);
                        let _ = answer_tx.send(answer.ok());
                        outcome
                    }
                    Ok(Release::Drop) | Err(_) => {
                        let _ = answer_tx.send(None);
                        Outcome::Dropped
                    }
                };
                task_shared.set(index, outcome.clone());
                let _ = done_tx.send(outcome);
            });
            shared.hold(Waiting {
                operation: named.operation.clone(),
                call: index,
                release,
                done,
            });
            match answer_rx.await {
                Ok(Some(answer)) => Ok(answer),
                _ => {
                    reset.notify_one();
                    std::future::pending().await
                }
            }
        }
    }
}

fn outcome_of(answer: &std::io::Result<Answer>, made: fn(u16) -> Outcome) -> Outcome {
    match answer {
        Ok(answer) => made(answer.status().as_u16()),
        Err(e) => Outcome::UpstreamFailed(e.to_string()),
    }
}

fn bad_gateway(error: &std::io::Error) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(format!(
        "the AWS fault proxy could not reach moto: {error}"
    ))));
    *answer.status_mut() = StatusCode::BAD_GATEWAY;
    answer
}

/// Headers that belong to one connection, not to the request: never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // The body is sent whole, so there is nothing to wait for.
    "expect",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Sends the request to moto on a connection of its own and reads the whole answer.
async fn forward(
    upstream: SocketAddr,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> std::io::Result<Answer> {
    let failed = |e: hyper::Error| std::io::Error::other(e.to_string());
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    tokio::spawn(connection);
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    copy_headers(&parts.headers, request.headers_mut());
    let response = sender.send_request(request).await.map_err(failed)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(failed)?.to_bytes();
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = parts.status;
    copy_headers(&parts.headers, answer.headers_mut());
    Ok(answer)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The SDK's attempt number: `amz-sdk-request: attempt=2; max=3`.
fn attempt_of(headers: &HeaderMap) -> Option<u32> {
    header(headers, "amz-sdk-request")?
        .split(';')
        .find_map(|part| part.trim().strip_prefix("attempt="))
        .and_then(|n| n.parse().ok())
}

/// How a service speaks, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// EC2's query protocol.
    Ec2Query,
    /// The query protocol of RDS, ElastiCache, IAM, STS.
    AwsQuery,
    /// AWS JSON 1.0/1.1 (SQS).
    Json,
    /// REST-JSON (EKS).
    RestJson,
    /// REST-XML (S3).
    RestXml,
}

/// A request, named.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    service: String,
    operation: String,
    protocol: Protocol,
}

/// Names a request by its service and operation (see the module documentation).
fn name_request(
    method: &hyper::Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Named {
    let query = uri.query().unwrap_or("");
    let service = header(headers, "authorization")
        .and_then(scope_service)
        .or_else(|| form_value(query, "X-Amz-Credential").and_then(|c| credential_service(&c)))
        .unwrap_or_default();
    if let Some(target) = header(headers, "x-amz-target") {
        let operation = target.rsplit('.').next().unwrap_or(target).to_string();
        return Named {
            service,
            operation,
            protocol: Protocol::Json,
        };
    }
    let form = std::str::from_utf8(body).unwrap_or("");
    if let Some(action) = form_value(form, "Action").or_else(|| form_value(query, "Action")) {
        let protocol = if service == "ec2" {
            Protocol::Ec2Query
        } else {
            Protocol::AwsQuery
        };
        return Named {
            service,
            operation: action,
            protocol,
        };
    }
    let path = uri.path();
    let (operation, protocol) = if service == "eks" {
        (eks_operation(method, path), Protocol::RestJson)
    } else {
        (
            s3_operation(method, path, query, headers),
            Protocol::RestXml,
        )
    };
    Named {
        service,
        operation: operation.unwrap_or_else(|| format!("{method} {path}")),
        protocol,
    }
}

/// The service of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/ec2/aws4_request, ...`.
fn scope_service(authorization: &str) -> Option<String> {
    let credential = authorization
        .split([',', ' '])
        .find_map(|part| part.trim().strip_prefix("Credential="))?;
    credential_service(credential)
}

/// The service of a credential scope `AKID/date/region/service/aws4_request`.
fn credential_service(credential: &str) -> Option<String> {
    credential.split('/').nth(3).map(str::to_string)
}

/// The value of `key` in an `application/x-www-form-urlencoded` text.
fn form_value(form: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// EKS's REST routes (the ones Comind uses, and their neighbours).
fn eks_operation(method: &hyper::Method, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let m = method.as_str();
    let operation = match (m, parts.as_slice()) {
        ("POST", ["clusters"]) => "CreateCluster",
        ("GET", ["clusters"]) => "ListClusters",
        ("GET", ["clusters", _]) => "DescribeCluster",
        ("DELETE", ["clusters", _]) => "DeleteCluster",
        ("POST", ["clusters", _, "updates"]) => "UpdateClusterVersion",
        ("GET", ["clusters", _, "updates"]) => "ListUpdates",
        ("GET", ["clusters", _, "updates", _]) => "DescribeUpdate",
        ("POST", ["clusters", _, "update-config"]) => "UpdateClusterConfig",
        ("POST", ["clusters", _, "node-groups"]) => "CreateNodegroup",
        ("GET", ["clusters", _, "node-groups"]) => "ListNodegroups",
        ("GET", ["clusters", _, "node-groups", _]) => "DescribeNodegroup",
        ("DELETE", ["clusters", _, "node-groups", _]) => "DeleteNodegroup",
        ("POST", ["clusters", _, "node-groups", _, "update-config"]) => "UpdateNodegroupConfig",
        ("POST", ["clusters", _, "node-groups", _, "update-version"]) => "UpdateNodegroupVersion",
        ("POST", ["clusters", _, "addons"]) => "CreateAddon",
        ("GET", ["clusters", _, "addons"]) => "ListAddons",
        ("GET", ["clusters", _, "addons", _]) => "DescribeAddon",
        ("DELETE", ["clusters", _, "addons", _]) => "DeleteAddon",
        ("POST", ["clusters", _, "access-entries"]) => "CreateAccessEntry",
        ("GET", ["clusters", _, "access-entries"]) => "ListAccessEntries",
        ("GET", ["clusters", _, "access-entries", _]) => "DescribeAccessEntry",
        ("POST", ["clusters", _, "access-entries", _]) => "UpdateAccessEntry",
        ("DELETE", ["clusters", _, "access-entries", _]) => "DeleteAccessEntry",
        ("POST", ["clusters", _, "pod-identity-associations"]) => "CreatePodIdentityAssociation",
        ("GET", ["clusters", _, "pod-identity-associations"]) => "ListPodIdentityAssociations",
        ("GET", ["clusters", _, "pod-identity-associations", _]) => {
            "DescribePodIdentityAssociation"
        }
        ("POST", ["clusters", _, "pod-identity-associations", _]) => "UpdatePodIdentityAssociation",
        ("DELETE", ["clusters", _, "pod-identity-associations", _]) => {
            "DeletePodIdentityAssociation"
        }
        ("POST", ["tags", ..]) => "TagResource",
        ("GET", ["tags", ..]) => "ListTagsForResource",
        ("DELETE", ["tags", ..]) => "UntagResource",
        _ => return None,
    };
    Some(operation.to_string())
}

/// Path-style S3 routes: `/`, `/bucket`, `/bucket/key`, by method and sub-resource.
fn s3_operation(
    method: &hyper::Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Option<String> {
    if let Some(id) = form_value(query, "x-id") {
        return Some(id);
    }
    let keys: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let has = |k: &str| keys.iter().any(|key| key == k);
    let trimmed = path.trim_start_matches('/');
    let (bucket, key) = match trimmed.split_once('/') {
        Some((bucket, key)) if !key.is_empty() => (bucket, Some(key)),
        Some((bucket, _)) => (bucket, None),
        None => (trimmed, None),
    };
    let m = method.as_str();
    if bucket.is_empty() {
        return (m == "GET").then(|| "ListBuckets".to_string());
    }
    if key.is_some() {
        let operation = match m {
            "GET" => "GetObject",
            "HEAD" => "HeadObject",
            "DELETE" => "DeleteObject",
            "PUT" if headers.contains_key("x-amz-copy-source") => "CopyObject",
            "PUT" => "PutObject",
            _ => return None,
        };
        return Some(operation.to_string());
    }
    const SUB_RESOURCES: &[(&str, &str)] = &[
        ("tagging", "BucketTagging"),
        ("versioning", "BucketVersioning"),
        ("policy", "BucketPolicy"),
        ("lifecycle", "BucketLifecycleConfiguration"),
        ("encryption", "BucketEncryption"),
        ("publicAccessBlock", "PublicAccessBlock"),
        ("acl", "BucketAcl"),
        ("ownershipControls", "BucketOwnershipControls"),
        ("cors", "BucketCors"),
    ];
    let sub = SUB_RESOURCES.iter().find(|(k, _)| has(k)).map(|(_, v)| *v);
    let operation = match (m, sub) {
        ("PUT", Some(sub)) => format!("Put{sub}"),
        ("GET", Some(sub)) => format!("Get{sub}"),
        // S3 names this one DeleteBucketLifecycle, without "Configuration".
        ("DELETE", Some("BucketLifecycleConfiguration")) => "DeleteBucketLifecycle".to_string(),
        ("DELETE", Some(sub)) => format!("Delete{sub}"),
        ("PUT", None) => "CreateBucket".to_string(),
        ("HEAD", None) => "HeadBucket".to_string(),
        ("DELETE", None) => "DeleteBucket".to_string(),
        ("POST", None) if has("delete") => "DeleteObjects".to_string(),
        ("GET", None) if has("versions") => "ListObjectVersions".to_string(),
        ("GET", None) if has("location") => "GetBucketLocation".to_string(),
        ("GET", None) if has("uploads") => "ListMultipartUploads".to_string(),
        ("GET", None) if form_value(query, "list-type").as_deref() == Some("2") => {
            "ListObjectsV2".to_string()
        }
        ("GET", None) => "ListObjects".to_string(),
        _ => return None,
    };
    Some(operation)
}

/// Which error a fault answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Throttling,
    Unavailable,
}

/// The error each service answers when it throttles or is unavailable, in its own
/// shape, so that the SDK parses and classifies it as it would AWS's.
fn error_answer(named: &Named, kind: ErrorKind) -> Answer {
    const REQUEST_ID: &str = "comind-fault-proxy";
    let (status, code, message) = match (named.protocol, kind) {
        (Protocol::Ec2Query, ErrorKind::Throttling) => {
            (503, "RequestLimitExceeded", "Request limit exceeded.")
        }
        (Protocol::AwsQuery, ErrorKind::Throttling) => (400, "Throttling", "Rate exceeded"),
        (Protocol::Json, ErrorKind::Throttling) => (400, "ThrottlingException", "Rate exceeded"),
        (Protocol::RestJson, ErrorKind::Throttling) => {
            (429, "ThrottlingException", "Rate exceeded")
        }
        (Protocol::RestXml, ErrorKind::Throttling) => {
            (503, "SlowDown", "Please reduce your request rate.")
        }
        (Protocol::Ec2Query, ErrorKind::Unavailable) => {
            (503, "Unavailable", "The service is unavailable.")
        }
        (Protocol::AwsQuery | Protocol::RestXml, ErrorKind::Unavailable) => {
            (503, "ServiceUnavailable", "Service is unavailable.")
        }
        (Protocol::Json | Protocol::RestJson, ErrorKind::Unavailable) => (
            503,
            "ServiceUnavailableException",
            "Service is unavailable.",
        ),
    };
    let message = format!("{message} (injected by the AWS fault proxy)");
    let (content_type, body) = match named.protocol {
        Protocol::Ec2Query => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>{code}</Code><Message>{message}</Message></Error></Errors>\
                 <RequestID>{REQUEST_ID}</RequestID></Response>"
            ),
        ),
        Protocol::AwsQuery => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code>\
                 <Message>{message}</Message></Error><RequestId>{REQUEST_ID}</RequestId>\
                 </ErrorResponse>",
                if status >= 500 { "Receiver" } else { "Sender" }
            ),
        ),
        Protocol::Json => (
            "application/x-amz-json-1.0",
            format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}"),
        ),
        Protocol::RestJson => ("application/json", format!("{{\"message\":\"{message}\"}}")),
        Protocol::RestXml => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>{REQUEST_ID}</RequestId></Error>"
            ),
        ),
    };
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let headers = answer.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    headers.insert(
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_static(REQUEST_ID),
    );
    if matches!(named.protocol, Protocol::Json | Protocol::RestJson) {
        // Where the JSON protocols' parsers look for the code first (SQS's
        // query-compatible JSON reads `x-amzn-query-error`).
        if let Ok(value) = HeaderValue::from_str(code) {
            headers.insert(HeaderName::from_static("x-amzn-errortype"), value);
        }
        let fault = if status >= 500 { "Receiver" } else { "Sender" };
        if let Ok(value) = HeaderValue::from_str(&format!("{code};{fault}")) {
            headers.insert(HeaderName::from_static("x-amzn-query-error"), value);
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        map
    }

    fn signed(service: &str) -> (&'static str, String) {
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abc"
            ),
        )
    }

    fn named(method: &str, uri: &str, pairs: &[(&'static str, String)], body: &str) -> Named {
        let method: hyper::Method = method.parse().unwrap_or(hyper::Method::GET);
        let uri: hyper::Uri = uri.parse().unwrap_or_default();
        let pairs: Vec<(&'static str, &str)> =
            pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        name_request(&method, &uri, &headers(&pairs), body.as_bytes())
    }

    #[test]
    fn query_protocols_are_named_by_their_action_and_service() {
        let ec2 = named(
            "POST",
            "/",
            &[signed("ec2")],
            "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.40.0.0%2F16",
        );
        assert_eq!(ec2.service, "ec2");
        assert_eq!(ec2.operation, "CreateVpc");
        assert_eq!(ec2.protocol, Protocol::Ec2Query);
        let rds = named("POST", "/", &[signed("rds")], "Action=DescribeDBInstances");
        assert_eq!(
            (rds.service.as_str(), rds.operation.as_str(), rds.protocol),
            ("rds", "DescribeDBInstances", Protocol::AwsQuery)
        );
        let presigned = named(
            "GET",
            "/?Action=GetCallerIdentity&X-Amz-Credential=testing%2F20260101%2Fus-east-1%2Fsts%2Faws4_request",
            &[],
            "",
        );
        assert_eq!(presigned.service, "sts");
        assert_eq!(presigned.operation, "GetCallerIdentity");
    }

    #[test]
    fn json_protocols_are_named_by_their_target() {
        let sqs = named(
            "POST",
            "/",
            &[
                signed("sqs"),
                ("x-amz-target", "AmazonSQS.CreateQueue".to_string()),
            ],
            "{}",
        );
        assert_eq!(
            (sqs.service.as_str(), sqs.operation.as_str(), sqs.protocol),
            ("sqs", "CreateQueue", Protocol::Json)
        );
    }

    #[test]
    fn rest_protocols_are_named_by_method_and_path() {
        let cases = [
            ("POST", "/clusters", "eks", "CreateCluster"),
            (
                "GET",
                "/clusters/comind-a-cluster",
                "eks",
                "DescribeCluster",
            ),
            (
                "POST",
                "/clusters/c/node-groups/n/update-version",
                "eks",
                "UpdateNodegroupVersion",
            ),
            ("POST", "/tags/arn%3Aaws%3Aeks", "eks", "TagResource"),
            ("PUT", "/comind-a-uploads", "s3", "CreateBucket"),
            ("PUT", "/comind-a-uploads?tagging", "s3", "PutBucketTagging"),
            ("GET", "/comind-a-uploads?tagging", "s3", "GetBucketTagging"),
            ("HEAD", "/comind-a-uploads", "s3", "HeadBucket"),
            ("GET", "/", "s3", "ListBuckets"),
            ("GET", "/b?versions&max-keys=1", "s3", "ListObjectVersions"),
            ("POST", "/b?delete", "s3", "DeleteObjects"),
            ("DELETE", "/b?lifecycle", "s3", "DeleteBucketLifecycle"),
            ("PUT", "/b/report.pdf?x-id=PutObject", "s3", "PutObject"),
            ("HEAD", "/b/report.pdf", "s3", "HeadObject"),
        ];
        for (method, path, service, operation) in cases {
            let n = named(method, path, &[signed(service)], "");
            assert_eq!(n.service, service, "{method} {path}");
            assert_eq!(n.operation, operation, "{method} {path}");
        }
        let unknown = named("PATCH", "/clusters", &[signed("eks")], "");
        assert_eq!(unknown.operation, "PATCH /clusters");
    }

    #[test]
    fn attempts_come_from_the_sdk_header() {
        assert_eq!(
            attempt_of(&headers(&[("amz-sdk-request", "attempt=2; max=3")])),
            Some(2)
        );
        assert_eq!(attempt_of(&HeaderMap::new()), None);
    }

    #[test]
    fn rules_count_their_own_calls() {
        let (changed, _) = watch::channel(0);
        let shared = Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], 1)),
            state: Mutex::new(State::default()),
            changed,
        };
        shared
            .lock()
            .rules
            .push((Rule::first(2, "CreateVpc", Fault::LoseAnswer).after(1), 0));
        shared.lock().rules.push((
            Rule::first(1, "ListTagsForResource", Fault::Throttle).on("rds"),
            0,
        ));
        let call = |service: &str, operation: &str| Call {
            service: service.to_string(),
            operation: operation.to_string(),
            attempt: None,
            invocation: None,
            outcome: Outcome::InFlight,
        };
        let faults: Vec<Option<Fault>> = (0..4)
            .map(|_| shared.arrive(call("ec2", "CreateVpc")).1)
            .collect();
        assert_eq!(
            faults,
            vec![None, Some(Fault::LoseAnswer), Some(Fault::LoseAnswer), None]
        );
        assert_eq!(shared.arrive(call("eks", "ListTagsForResource")).1, None);
        assert_eq!(
            shared.arrive(call("rds", "ListTagsForResource")).1,
            Some(Fault::Throttle)
        );
        assert_eq!(shared.lock().calls.len(), 6);
        shared.lock().rules.clear();
        shared
            .lock()
            .rules
            .push((Rule::next(1, Fault::Hold).on("s3"), 0));
        assert_eq!(shared.arrive(call("ec2", "DescribeVpcs")).1, None);
        assert_eq!(
            shared.arrive(call("s3", "PutPublicAccessBlock")).1,
            Some(Fault::Hold)
        );
        assert_eq!(shared.arrive(call("s3", "PutBucketPolicy")).1, None);
    }

    #[test]
    fn errors_come_in_each_protocols_shape() {
        let n = |protocol| Named {
            service: "x".to_string(),
            operation: "Op".to_string(),
            protocol,
        };
        let ec2 = error_answer(&n(Protocol::Ec2Query), ErrorKind::Throttling);
        assert_eq!(ec2.status(), 503);
        let json = error_answer(&n(Protocol::Json), ErrorKind::Throttling);
        assert_eq!(json.status(), 400);
        assert_eq!(
            json.headers()
                .get("x-amzn-query-error")
                .map(|v| v.as_bytes()),
            Some(&b"ThrottlingException;Sender"[..])
        );
        let s3 = error_answer(&n(Protocol::RestXml), ErrorKind::Unavailable);
        assert_eq!(s3.status(), 503);
    }
}
