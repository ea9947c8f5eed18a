//! The HTTPS client this crate's own requests share (the Argo CD manifest's download,
//! the consoles' checks, Git's smart HTTP): hyper over rustls with ring, trusting the
//! system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` replace them).

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// A client for bodies of type `B`; `plain_http` also lets it speak `http://`.
///
/// # Errors
/// The reason, when the system has no root certificate to trust.
pub(crate) fn client<B>(
    plain_http: bool,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("no trusted root certificates: {e}"))?;
    let connector = if plain_http {
        builder.https_or_http().enable_http1().build()
    } else {
        builder.https_only().enable_http1().build()
    };
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector))
}

/// `error` with its causes: the client's own text ("client error (Connect)") says
/// little; the TLS or socket error beneath it says what to fix.
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
