//! A minimal HTTP/1.1 client for talking to a local daemon (`meshlite peers`, the CLI's
//! `summary` and `bundle` commands while a daemon holds the data directory, tests, benches): one
//! request per connection, built on hyper (already in the tree through axum). Bundle bodies are
//! streamed both ways ([`post_stream`], [`post_to_writer`]).

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    /// Writing a streamed response body failed.
    #[error("cannot write the response body: {source}")]
    Write {
        /// The writer's error.
        source: std::io::Error,
    },
}

/// Sends one request and returns the status and the whole body.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), HttpcError> {
    let answer = request_with(addr, method, path, &[], body).await?;
    Ok((answer.status, answer.body))
}

/// A whole response.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// Status, headers and body, for destructuring.
    pub fn into_parts(self) -> (StatusCode, hyper::HeaderMap, Bytes) {
        (self.status, self.headers, self.body)
    }
}

/// [`request`] with extra request headers, returning the response headers too.
pub async fn request_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Answer, HttpcError> {
    let body = Full::new(Bytes::from(body.unwrap_or_default()));
    let (res, driver) = send_with(addr, method, path, headers, body).await?;
    let out = match res {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            body.collect().await.map(|b| Answer {
                status: parts.status,
                headers: parts.headers,
                body: b.to_bytes(),
            })
        }
        Err(e) => Err(e),
    };
    driver.abort();
    Ok(out?)
}

type Driver = tokio::task::JoinHandle<Result<(), hyper::Error>>;

/// Opens a connection and sends one request; the response (or its error) and the connection's
/// driver task, to abort once the body is read.
async fn send<B>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: B,
) -> Result<(Result<Response<Incoming>, hyper::Error>, Driver), HttpcError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    send_with(addr, method, path, &[], body).await
}

async fn send_with<B>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> Result<(Result<Response<Incoming>, hyper::Error>, Driver), HttpcError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body)?;
    Ok((sender.send_request(req).await, driver))
}

/// Bytes per chunk of a streamed request body.
const CHUNK: usize = 64 * 1024;

/// `POST path` with the body streamed from `input` in chunks of [`CHUNK`] bytes (a file of any
/// size in bounded memory); returns the status and the whole (small) response body.
pub async fn post_stream<R>(
    addr: SocketAddr,
    path: &str,
    input: R,
) -> Result<(StatusCode, Bytes), HttpcError>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let chunks = futures_util::stream::unfold(Some(input), |state| async move {
        let mut input = state?;
        let mut buf = vec![0u8; CHUNK];
        match input.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), Some(input)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let (res, driver) = send(addr, Method::POST, path, StreamBody::new(Box::pin(chunks))).await?;
    let out = match res {
        Ok(res) => {
            let status = res.status();
            res.into_body()
                .collect()
                .await
                .map(|b| (status, b.to_bytes()))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    Ok(out?)
}

/// What [`post_to_writer`] got.
#[derive(Debug)]
pub enum Streamed {
    /// A success status; the body went to the writer (this many bytes).
    Written(u64),
    /// Another status, with its (error) body.
    Refused(StatusCode, Bytes),
}

/// `POST path` with a JSON body; a successful response's body is streamed into `out` chunk by
/// chunk (bounded memory), any other response is returned whole.
pub async fn post_to_writer<W>(
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
    out: &mut W,
) -> Result<Streamed, HttpcError>
where
    W: AsyncWrite + Unpin,
{
    let (res, driver) = send(addr, Method::POST, path, Full::new(Bytes::from(body))).await?;
    let result = async {
        let res = res?;
        let status = res.status();
        if !status.is_success() {
            let body = res.into_body().collect().await?.to_bytes();
            return Ok(Streamed::Refused(status, body));
        }
        let mut body = res.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|source| HttpcError::Write { source })?;
                written += data.len() as u64;
            }
        }
        Ok::<_, HttpcError>(Streamed::Written(written))
    }
    .await;
    driver.abort();
    result
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
