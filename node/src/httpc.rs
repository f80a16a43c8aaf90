//! A minimal HTTP/1.1 client for talking to a local daemon (`meshlite peers`, tests, benches):
//! one request per connection, built on hyper (already in the tree through axum).

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};

/// Error of one request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpcError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Sends one request and returns the status and the whole body.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), HttpcError> {
    let (status, _, body) = request_with(addr, method, path, &[], body).await?;
    Ok((status, body))
}

/// Sends one request with extra `headers`; returns the status, the headers and the body.
pub async fn request_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), HttpcError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| HttpcError::Connect { addr, source })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let res = sender.send_request(req).await;
    let out = match res {
        Ok(res) => {
            let status = res.status();
            let headers = res.headers().clone();
            res.into_body()
                .collect()
                .await
                .map(|b| (status, headers, b.to_bytes()))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    Ok(out?)
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), HttpcError> {
    request(addr, Method::GET, path, None).await
}

/// `POST path` with a JSON body.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<(StatusCode, Bytes), HttpcError> {
    request(
        addr,
        Method::POST,
        path,
        Some(body.to_string().into_bytes()),
    )
    .await
}
