//! One agent as the coordinator reaches it: gRPC over mutual TLS, every call under a
//! deadline, errors that name the agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::agent::pb::agent_client::AgentClient;
use crate::agent::tls::agent_server_name;

/// TCP connect plus TLS handshake, together: an agent whose node is cut off (SYNs unanswered)
/// is given up on after this, not after the kernel's ~2 min of SYN retries. 3 s lets one lost
/// SYN be sent again (Linux resends after 1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// tonic's own connect deadline, a backstop behind ours: ours must fire first so the reason
/// says which step timed out (tonic's says only "deadline has elapsed").
const CONNECT_BACKSTOP: Duration = Duration::from_secs(4);
/// Any unary call, and a capture stream's first answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on every connection: an agent that stops answering (hung, its node cut off)
/// is found within interval + timeout, mid-stream too.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message the coordinator accepts (a frame is at most a snap length).
const MAX_MESSAGE: usize = 1 << 20;

/// How connections to agents are secured.
#[derive(Debug, Clone)]
pub enum Transport {
    MutualTls(Arc<rustls::ClientConfig>),
    Plaintext,
}

/// Why an agent could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent {addr}: {detail}")]
    Unreachable { addr: SocketAddr, detail: String },
    #[error("agent {addr} ({node}): {detail}")]
    Call {
        addr: SocketAddr,
        node: String,
        detail: String,
    },
}

/// An error and its causes on one line (tonic's transport errors hide the TLS reason in
/// their sources).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !line.contains(&t) {
            line.push_str(": ");
            line.push_str(&t);
        }
        cur = c.source();
    }
    line
}

/// Connects to the agent at `addr` (no request sent yet).
pub async fn connect(
    addr: SocketAddr,
    transport: &Transport,
) -> Result<AgentClient<Channel>, AgentError> {
    let unreachable = |detail: String| AgentError::Unreachable { addr, detail };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| unreachable(chain(&e)))?
        .connect_timeout(match transport {
            Transport::Plaintext => CONNECT_TIMEOUT,
            Transport::MutualTls(_) => CONNECT_BACKSTOP,
        })
        .timeout(CALL_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let channel = match transport {
        Transport::Plaintext => endpoint.connect().await,
        Transport::MutualTls(config) => {
            let connector = TlsConnector::from(config.clone());
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let connector = connector.clone();
                    async move {
                        // One deadline for both steps, taken per connection (tonic calls this
                        // again when it reconnects).
                        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
                        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
                            .await
                            .map_err(|_| {
                                std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    format!("no TCP connection within {CONNECT_TIMEOUT:?}"),
                                )
                            })??;
                        tcp.set_nodelay(true)?;
                        let tls = tokio::time::timeout_at(
                            deadline,
                            connector.connect(agent_server_name(), tcp),
                        )
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no TLS handshake within {CONNECT_TIMEOUT:?}"),
                            )
                        })??;
                        Ok::<_, std::io::Error>(TokioIo::new(tls))
                    }
                }))
                .await
        }
    }
    .map_err(|e| unreachable(chain(&e)))?;
    Ok(AgentClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}
