//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and of
//! their replay on stable (`tests/fuzz_corpus.rs` runs every file of
//! `fuzz/corpus/<target>/` through the same function). Not an API: each
//! function takes arbitrary bytes and must return, whatever they are;
//! a panic, a hang or a broken round trip is a bug.
//!
//! The async ones run on one current-thread runtime built once, and talk to
//! the code under test through `tokio::io::duplex` (no sockets): the peer's
//! bytes are written, then EOF, while whatever the code under test writes
//! back is drained.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::frame::{FrameError, decode_header, encode_header, next_frame, read_frame, write_frame};
use crate::handshake::{DialKind, accept_if, dial_expecting};
use crate::mesh::Wire;
use crate::seal::SessionKeys;
use crate::secret::ClusterSecret;

/// The frame limit of the targets: small, so that "too large" is reachable
/// and no input allocates much.
const LIMIT: usize = 64 << 10;
/// The secret both fixed handshake sides hold.
const SECRET: &str = "the fuzzing cluster secret, 16+ bytes";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime"))
}

fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET, "fuzz").expect("a valid secret")
}

/// Runs `side` against a peer that writes `data`, then EOF, and drains what
/// `side` writes until `side` drops its end; returns that.
fn against_peer<F, Fut>(data: &[u8], side: F) -> Vec<u8>
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let (mut peer, ours) = tokio::io::duplex(LIMIT);
    let mut sink = Vec::new();
    runtime().block_on(async {
        let peer = async {
            // The side may stop reading (and drop its end) at any point.
            let _ = peer.write_all(data).await;
            let _ = peer.shutdown().await;
            let _ = peer.read_to_end(&mut sink).await;
        };
        tokio::join!(side(ours), peer);
    });
    sink
}

/// Frames: [`read_frame`] over `data` as a stream, and [`next_frame`] over
/// `data` as a record's content; every frame split out is written back by
/// [`write_frame`] as the bytes it came from.
pub fn frame(data: &[u8]) {
    let mut stream = data;
    let streamed = runtime().block_on(async {
        let mut n = 0usize;
        loop {
            match read_frame(&mut stream, LIMIT).await {
                Ok(f) => n += 8 + f.header.len() + f.payload.len(),
                Err(FrameError::Closed) => return Some(n),
                Err(_) => return None,
            }
        }
    });
    if let Some(n) = streamed {
        assert_eq!(n, data.len(), "a clean end after whole frames consumed every byte");
    }
    let mut content = Bytes::copy_from_slice(data);
    let mut offset = 0;
    while let Ok(Some(f)) = next_frame(&mut content, LIMIT) {
        let mut again = Vec::new();
        runtime()
            .block_on(write_frame(&mut again, &f.header, &f.payload, LIMIT))
            .expect("a frame read under the limit is written under it");
        assert_eq!(&data[offset..offset + again.len()], &again[..], "a frame is written back as it was read");
        offset += again.len();
        assert_eq!(offset + content.len(), data.len(), "next_frame takes exactly one frame");
    }
}

fn keys() -> (SessionKeys, SessionKeys) {
    (SessionKeys { send: [1; 32], recv: [2; 32] }, SessionKeys { send: [2; 32], recv: [1; 32] })
}

/// Sealed records: [`crate::seal::Opener::read`] over `data` with fixed
/// keys; and a round trip: `data` cut into records (its first byte gives
/// the piece size, odd pieces go as a write's tail), sealed, then opened
/// back identically and in order.
pub fn seal(data: &[u8]) {
    let (writer, reader) = keys();
    runtime().block_on(async {
        let mut opener = reader.opener(LIMIT);
        let mut r = data;
        while opener.read(&mut r).await.is_ok() {}

        let Some((&size, rest)) = data.split_first() else { return };
        let pieces: Vec<&[u8]> = rest.chunks(usize::from(size) + 1).collect();
        let mut sealer = writer.sealer();
        let mut wire = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            if i % 2 == 0 {
                sealer.push(piece);
                sealer.write(&mut wire, &[]).await.expect("writes to a Vec");
            } else {
                sealer.write(&mut wire, piece).await.expect("writes to a Vec");
            }
        }
        let mut opener = reader.opener(LIMIT);
        let mut r = &wire[..];
        for piece in &pieces {
            let content = opener.read(&mut r).await.expect("a sealed record opens");
            assert_eq!(&content[..], *piece, "a record opens as it was sealed");
        }
        assert!(matches!(opener.read(&mut r).await, Err(FrameError::Closed)), "nothing after the last record");
    });
}

/// The accepting side of the handshake (node `n2`, incarnation 22,
/// challenge `[2; 32]`, refusing a re-dial from `n3`) against a dialer's
/// bytes.
pub fn handshake_acceptor(data: &[u8]) {
    accepted(data);
}

/// [`handshake_acceptor`]; whether the handshake completed.
fn accepted(data: &[u8]) -> bool {
    let secret = secret();
    let mut done = false;
    let (secret, out) = (&secret, &mut done);
    let _ = against_peer(data, |mut s| async move {
        let admit = |name: &str, kind| if name == "n3" && kind == DialKind::Redial { Err("disconnected".to_owned()) } else { Ok(()) };
        *out = accept_if(&mut s, "n2", 22, secret, [2; 32], admit).await.is_ok();
    });
    done
}

/// The dialing side of the handshake (node `n1`, incarnation 11, challenge
/// `[1; 32]`) against an acceptor's bytes. The first byte chooses the dial:
/// bit 0 a re-dial, bit 1 expecting `n2`.
pub fn handshake_dialer(data: &[u8]) {
    dialed(data);
}

/// [`handshake_dialer`]; whether the handshake completed.
fn dialed(data: &[u8]) -> bool {
    let Some((&how, data)) = data.split_first() else { return false };
    let kind = if how & 1 == 0 { DialKind::Connect } else { DialKind::Redial };
    let expected = (how & 2 != 0).then_some("n2");
    let secret = secret();
    let mut done = false;
    let (secret, out) = (&secret, &mut done);
    let _ = against_peer(data, |mut s| async move {
        *out = dial_expecting(&mut s, "n1", 11, secret, [1; 32], kind, expected).await.is_ok();
    });
    done
}

/// Frame headers: `data` decoded as a [`Wire`] (with the remote-process
/// and RPC headers inside it) and as a handshake message; what decodes is
/// encoded, and that decodes and encodes to the same bytes.
pub fn header(data: &[u8]) {
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
        if let Ok(value) = decode_header::<T>(data) {
            let once = encode_header(&value);
            let again: T = decode_header(&once).expect("an encoded header decodes");
            assert_eq!(encode_header(&again), once, "a header encodes the same after a round trip");
        }
    }
    round_trip::<Wire>(data);
    round_trip::<crate::handshake::Msg>(data);
}

mod admin;
pub use admin::admin;

/// The seed inputs of each target (`(target, name, bytes)`): a real
/// handshake from each side, real records and frames, real headers and
/// requests. `tests/fuzz_corpus.rs` replays them and can write them into
/// `fuzz/corpus/`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let (dialer, acceptor) = transcript(DialKind::Connect);
    out.push(("handshake_acceptor", "seed-hello".to_owned(), dialer));
    out.push(("handshake_dialer", "seed-connect".to_owned(), [&[0u8][..], &acceptor].concat()));
    let (dialer, acceptor) = transcript(DialKind::Redial);
    out.push(("handshake_acceptor", "seed-redial".to_owned(), dialer));
    out.push(("handshake_dialer", "seed-redial-expecting".to_owned(), [&[3u8][..], &acceptor].concat()));

    let headers: Vec<(&str, Vec<u8>)> = vec![
        ("heartbeat", encode_header(&Wire::Heartbeat)),
        ("peers", encode_header(&Wire::Peers { me: "n1:4000".into(), known: vec![("n2".into(), "10.0.0.2:4000".into())] })),
        (
            "rpc-call",
            encode_header(&Wire::Rpc(crate::rpc::RpcWire::Call {
                id: 7,
                name: "raft.append".into(),
                ctx: Some(vec![("traceparent".into(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into())]),
            })),
        ),
        ("rpc-reply", encode_header(&Wire::Rpc(crate::rpc::RpcWire::Reply { id: 7, outcome: crate::rpc::Outcome::Busy }))),
        ("proc-send-named", encode_header(&Wire::Proc(crate::remote::ProcWire::SendNamed { name: "counter".into(), tag: 42, ctx: None }))),
    ];
    let mut frames = Vec::new();
    for (name, h) in &headers {
        out.push(("header", format!("seed-{name}"), h.clone()));
        runtime().block_on(write_frame(&mut frames, h, b"payload", LIMIT)).expect("written");
    }
    out.push(("frame", "seed-frames".to_owned(), frames.clone()));

    let (writer, _) = keys();
    let mut sealer = writer.sealer();
    let mut records = Vec::new();
    runtime().block_on(async {
        sealer.push(&frames);
        sealer.write(&mut records, &[]).await.expect("written");
        sealer.write(&mut records, b"a tail").await.expect("written");
    });
    out.push(("seal", "seed-records".to_owned(), records));
    out.push(("seal", "seed-round-trip".to_owned(), [&[7u8][..], &frames].concat()));

    for (name, request) in admin::SEED_REQUESTS {
        out.push(("admin", format!("seed-{name}"), request.as_bytes().to_vec()));
    }
    out
}

/// What each side of a real handshake (the fixed sides of the targets)
/// writes: `(dialer's bytes, acceptor's bytes)`.
fn transcript(kind: DialKind) -> (Vec<u8>, Vec<u8>) {
    let secret = secret();
    let (mut d_tap, mut a_tap) = (Vec::new(), Vec::new());
    runtime().block_on(async {
        // Each side's writes are copied out as the other reads them.
        let (mut d_to_relay, mut relay_d) = tokio::io::duplex(LIMIT);
        let (mut a_to_relay, mut relay_a) = tokio::io::duplex(LIMIT);
        let dialer = async {
            let r = dial_expecting(&mut d_to_relay, "n1", 11, &secret, [1; 32], kind, Some("n2")).await;
            drop(d_to_relay);
            r
        };
        let acceptor = async {
            let r = accept_if(&mut a_to_relay, "n2", 22, &secret, [2; 32], |_, _| Ok(())).await;
            drop(a_to_relay);
            r
        };
        let relay = async {
            let (mut dr, mut dw) = tokio::io::split(&mut relay_d);
            let (mut ar, mut aw) = tokio::io::split(&mut relay_a);
            let one = copy_tapped(&mut dr, &mut aw, &mut d_tap);
            let two = copy_tapped(&mut ar, &mut dw, &mut a_tap);
            tokio::join!(one, two);
        };
        let (dr, ar, ()) = tokio::join!(dialer, acceptor, relay);
        dr.expect("the dialer completes");
        ar.expect("the acceptor completes");
    });
    (d_tap, a_tap)
}

async fn copy_tapped<R, W>(r: &mut R, w: &mut W, tap: &mut Vec<u8>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tap.extend_from_slice(&buf[..n]);
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = w.shutdown().await;
}

/// A network with no sockets: binding gives a listener that never accepts,
/// and connecting fails. The admin target's node runs on it.
struct NoNetwork;

struct NoListener(String);

impl foundation::rt::Listener for NoListener {
    fn accept(&self) -> foundation::rt::net::BoxFuture<'_, std::io::Result<(foundation::rt::BoxStream, String)>> {
        Box::pin(std::future::pending())
    }

    fn local_addr(&self) -> std::io::Result<String> {
        Ok(self.0.clone())
    }
}

impl foundation::rt::Network for NoNetwork {
    fn bind<'a>(&'a self, addr: &'a str) -> foundation::rt::net::BoxFuture<'a, std::io::Result<Box<dyn foundation::rt::Listener>>> {
        Box::pin(async move { Ok(Box::new(NoListener(addr.to_owned())) as Box<dyn foundation::rt::Listener>) })
    }

    fn connect<'a>(&'a self, addr: &'a str) -> foundation::rt::net::BoxFuture<'a, std::io::Result<foundation::rt::BoxStream>> {
        Box::pin(async move { Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, format!("no network: {addr}"))) })
    }
}

fn no_network() -> Arc<dyn foundation::rt::Network> {
    Arc::new(NoNetwork)
}

fn admin_services() -> BTreeSet<crate::server::Service> {
    use crate::server::Service;
    [Service::Events, Service::Telemetry].into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handshake seeds are whole handshakes: the fuzzer starts from
    /// inputs that reach the end of each role, and one flipped byte fails.
    #[test]
    fn the_handshake_seeds_complete_and_a_flipped_byte_does_not() {
        for (target, name, data) in seeds() {
            let run = match target {
                "handshake_acceptor" => accepted,
                "handshake_dialer" => dialed,
                _ => continue,
            };
            assert!(run(&data), "{name}");
            let mut bad = data.clone();
            *bad.last_mut().expect("not empty") ^= 1;
            assert!(!run(&bad), "{name} with its last byte flipped");
        }
    }
}
