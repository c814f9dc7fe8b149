//! The network behind the seam: bind and connect, returning byte streams.
//!
//! Addresses are strings (`"127.0.0.1:4000"`, or a simulated host name with a
//! port) so that a simulated network can resolve its own names. Cluster code
//! holds an `Arc<dyn Network>` from [`super::Rt::network`] and never names
//! tokio sockets.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream (a TCP connection, real or simulated).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// An owned, type-erased byte stream.
pub type BoxStream = Box<dyn Stream>;

/// A boxed future, as returned by the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bound listener.
pub trait Listener: Send + Sync {
    /// Waits for the next connection; returns it and the peer's address.
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, String)>>;
    /// The address this listener is bound to (with the real port if 0 was asked).
    fn local_addr(&self) -> io::Result<String>;
}

/// Binds listeners and opens connections.
pub trait Network: Send + Sync + 'static {
    /// Binds a listener on `addr`.
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>>;
    /// Connects to `addr`.
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>>;
}

/// The real network: tokio TCP sockets, with `TCP_NODELAY` on every stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNetwork;

struct TokioListener(tokio::net::TcpListener);

impl Listener for TokioListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxStream, peer.to_string()))
        })
    }

    fn local_addr(&self) -> io::Result<String> {
        self.0.local_addr().map(|a| a.to_string())
    }
}

impl Network for TokioNetwork {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            #[allow(clippy::disallowed_methods)] // the seam's real network
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TokioListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            #[allow(clippy::disallowed_methods)] // the seam's real network
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tokio_network_round_trip_on_loopback() {
        let net = TokioNetwork;
        let listener = net.bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let server = crate::rt::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("echo");
        });
        let mut c = net.connect(&addr).await.expect("connect");
        c.write_all(b"hello").await.expect("write");
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.expect("read echo");
        assert_eq!(&back, b"hello");
        server.await.expect("server task");
    }
}
