//! The connection handshake: protocol version and node names, then a
//! mutual HMAC-SHA256 challenge on the cluster secret.
//!
//! ```text
//! dialer → acceptor  Hello   { protocol, name, challenge_d, incarnation_d }             (Redial: the same, for a dial nobody asked for)
//! acceptor → dialer  Welcome { protocol, name, challenge_a, proof_a, incarnation_a }   or Refused
//! dialer → acceptor  Proof   { proof_d }                                or nothing (dialer refuses)
//! acceptor → dialer  Accepted                                           or Refused
//! proof_a = HMAC(secret, "acceptor" ‖ challenge_d ‖ acceptor name ‖ dialer name)
//! proof_d = HMAC(secret, "dialer"   ‖ challenge_a ‖ dialer name ‖ acceptor name)
//! ```
//!
//! Each side also says which incarnation of its node it is (a number
//! drawn when its `Cluster` started): a connection that replaces another
//! between the same two incarnations continues its session (a reply to a
//! call made on the old one still counts), while one from a restarted node
//! starts a new session.
//!
//! Each side proves it holds the secret by answering the other's fresh
//! challenge; the secret itself never crosses the wire. The labels and the
//! names in the MAC keep a proof from being replayed in the other direction
//! or to another node. Every step is bounded by the caller's timeout and
//! the frame limit [`HANDSHAKE_FRAME_BYTES`].
//!
//! A dial the mesh makes on its own (a re-dial after a loss, a peer learned
//! from another) says so with `Redial` instead of `Hello`, so that a node
//! that disconnected from the dialer can refuse it ([`accept_if`]) while an
//! explicit connect still gets through. (A build before `Redial` refuses
//! such a dial as a protocol error: only automatic re-dials between mixed
//! builds fail.)

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{FrameError, read_header, write_header};
use crate::secret::ClusterSecret;

/// The wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest handshake frame (names are short).
pub const HANDSHAKE_FRAME_BYTES: usize = 4096;
/// Bytes of a challenge.
pub const CHALLENGE_BYTES: usize = 32;

type Challenge = [u8; CHALLENGE_BYTES];

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Hello {
        protocol: u32,
        name: String,
        challenge: Challenge,
        incarnation: u64,
    },
    Welcome {
        protocol: u32,
        name: String,
        challenge: Challenge,
        proof: Vec<u8>,
        incarnation: u64,
    },
    Proof {
        proof: Vec<u8>,
    },
    Accepted,
    Refused {
        reason: String,
    },
    /// A `Hello` for a dial the mesh made on its own (appended last, so the
    /// other variants keep their postcard tags).
    Redial {
        protocol: u32,
        name: String,
        challenge: Challenge,
        incarnation: u64,
    },
}

/// Whether a dial was asked for ([`Cluster::connect`](crate::Cluster::connect))
/// or made by the mesh on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialKind {
    /// Asked for: a node that disconnected from the dialer still admits it.
    Connect,
    /// A re-dial after a loss or a peer learned from another node.
    Redial,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol {theirs}, this node speaks {ours}")]
    Version {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The peer's proof does not match: it does not hold our secret.
    #[error("peer `{peer}` failed the secret check (a different cluster secret?)")]
    BadSecret {
        /// The name the peer gave.
        peer: String,
    },
    /// The peer refused us, and said why.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// This node refused the (authenticated) peer, and said why.
    #[error("refused peer `{peer}`: {reason}")]
    NotAdmitted {
        /// The peer's proven name.
        peer: String,
        /// Why (also sent to the peer).
        reason: String,
    },
    /// The peer broke the protocol.
    #[error("handshake protocol error: {0}")]
    Protocol(String),
    /// The connection failed or carried garbage.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

fn proof(secret: &ClusterSecret, label: &[u8], challenge: &Challenge, prover: &str, verifier: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
    mac.update(label);
    mac.update(challenge);
    mac.update(&(prover.len() as u64).to_be_bytes());
    mac.update(prover.as_bytes());
    mac.update(verifier.as_bytes());
    mac
}

async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, reason: String) {
    // Best effort: the peer may already be gone.
    let _ = write_header(s, &Msg::Refused { reason }, HANDSHAKE_FRAME_BYTES).await;
}

/// Who the other side of a handshake proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node name.
    pub name: String,
    /// Its incarnation (see the module docs).
    pub incarnation: u64,
}

/// The dialing side, as incarnation 0. Returns the peer once both sides
/// are proven.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &str,
    secret: &ClusterSecret,
    challenge: Challenge,
) -> Result<Peer, HandshakeError> {
    dial_as(s, me, 0, secret, challenge, DialKind::Connect).await
}

/// [`dial`], saying which kind of dial this is.
pub async fn dial_as<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &str,
    incarnation: u64,
    secret: &ClusterSecret,
    challenge: Challenge,
    kind: DialKind,
) -> Result<Peer, HandshakeError> {
    let (protocol, name) = (PROTOCOL_VERSION, me.to_owned());
    let hello = match kind {
        DialKind::Connect => Msg::Hello { protocol, name, challenge, incarnation },
        DialKind::Redial => Msg::Redial { protocol, name, challenge, incarnation },
    };
    write_header(s, &hello, HANDSHAKE_FRAME_BYTES).await?;
    let (peer, their_challenge, their_incarnation) = match read_header(s, HANDSHAKE_FRAME_BYTES).await? {
        Msg::Welcome { protocol, .. } if protocol != PROTOCOL_VERSION => {
            return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: protocol });
        }
        Msg::Welcome { name, challenge: theirs, proof: p, incarnation, .. } => {
            if proof(secret, b"acceptor", &challenge, &name, me).verify_slice(&p).is_err() {
                return Err(HandshakeError::BadSecret { peer: name });
            }
            (name, theirs, incarnation)
        }
        Msg::Refused { reason } => return Err(HandshakeError::Refused(reason)),
        other => return Err(HandshakeError::Protocol(format!("expected Welcome, got {other:?}"))),
    };
    let p = proof(secret, b"dialer", &their_challenge, me, &peer).finalize().into_bytes().to_vec();
    write_header(s, &Msg::Proof { proof: p }, HANDSHAKE_FRAME_BYTES).await?;
    match read_header(s, HANDSHAKE_FRAME_BYTES).await? {
        Msg::Accepted => Ok(Peer { name: peer, incarnation: their_incarnation }),
        Msg::Refused { reason } => Err(HandshakeError::Refused(reason)),
        other => Err(HandshakeError::Protocol(format!("expected Accepted, got {other:?}"))),
    }
}

/// The accepting side, as incarnation 0. Returns the peer once both sides
/// are proven.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &str,
    secret: &ClusterSecret,
    challenge: Challenge,
) -> Result<Peer, HandshakeError> {
    accept_if(s, me, 0, secret, challenge, |_, _| Ok(())).await
}

/// [`accept`], but once the peer has proven its name, `admit` (given the
/// name and the kind of dial) may refuse it: the dialer then gets
/// `Refused` with the reason instead of `Accepted`.
pub async fn accept_if<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &str,
    incarnation: u64,
    secret: &ClusterSecret,
    challenge: Challenge,
    admit: impl FnOnce(&str, DialKind) -> Result<(), String>,
) -> Result<Peer, HandshakeError> {
    let (peer, their_challenge, kind, their_incarnation) = match read_header(s, HANDSHAKE_FRAME_BYTES).await? {
        Msg::Hello { protocol, .. } | Msg::Redial { protocol, .. } if protocol != PROTOCOL_VERSION => {
            refuse(s, format!("protocol {protocol} is not spoken here; this node speaks {PROTOCOL_VERSION}")).await;
            return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: protocol });
        }
        Msg::Hello { name, challenge: theirs, incarnation, .. } => (name, theirs, DialKind::Connect, incarnation),
        Msg::Redial { name, challenge: theirs, incarnation, .. } => (name, theirs, DialKind::Redial, incarnation),
        other => return Err(HandshakeError::Protocol(format!("expected Hello, got {other:?}"))),
    };
    let p = proof(secret, b"acceptor", &their_challenge, me, &peer).finalize().into_bytes().to_vec();
    write_header(
        s,
        &Msg::Welcome { protocol: PROTOCOL_VERSION, name: me.to_owned(), challenge, proof: p, incarnation },
        HANDSHAKE_FRAME_BYTES,
    )
    .await?;
    match read_header(s, HANDSHAKE_FRAME_BYTES).await? {
        Msg::Proof { proof: p } => {
            if proof(secret, b"dialer", &challenge, &peer, me).verify_slice(&p).is_err() {
                refuse(s, "secret check failed".into()).await;
                return Err(HandshakeError::BadSecret { peer });
            }
        }
        other => return Err(HandshakeError::Protocol(format!("expected Proof, got {other:?}"))),
    }
    if let Err(reason) = admit(&peer, kind) {
        refuse(s, reason.clone()).await;
        return Err(HandshakeError::NotAdmitted { peer, reason });
    }
    write_header(s, &Msg::Accepted, HANDSHAKE_FRAME_BYTES).await?;
    Ok(Peer { name: peer, incarnation: their_incarnation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text, "test").expect("valid")
    }

    async fn pair(dialer_secret: &str, acceptor_secret: &str) -> (Result<Peer, HandshakeError>, Result<Peer, HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let (ds, as_) = (secret(dialer_secret), secret(acceptor_secret));
        // Each side hangs up when it is done, as a real connection would.
        let dialer = async move {
            let r = dial_as(&mut a, "n1", 11, &ds, [1; 32], DialKind::Connect).await;
            drop(a);
            r
        };
        let acceptor = async move {
            let r = accept_if(&mut b, "n2", 22, &as_, [2; 32], |_, _| Ok(())).await;
            drop(b);
            r
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(dialer, acceptor) }).await.expect("no hang")
    }

    #[tokio::test]
    async fn same_secret_both_sides_learn_each_other() {
        let (d, a) = pair("the-shared-secret-0001", "the-shared-secret-0001").await;
        assert_eq!(d.expect("dialer ok"), Peer { name: "n2".into(), incarnation: 22 });
        assert_eq!(a.expect("acceptor ok"), Peer { name: "n1".into(), incarnation: 11 });
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_by_both_sides() {
        let (d, a) = pair("the-shared-secret-0001", "another-secret-xxxx02").await;
        assert!(matches!(d, Err(HandshakeError::BadSecret { ref peer }) if peer == "n2"), "{d:?}");
        // The dialer hung up before proving itself: the acceptor sees it go.
        assert!(a.is_err(), "{a:?}");
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_with_the_reason() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let s = secret("the-shared-secret-0001");
        let bad_hello = Msg::Hello { protocol: 99, name: "old".into(), challenge: [0; 32], incarnation: 0 };
        let (sent, accepted) = tokio::join!(write_header(&mut a, &bad_hello, HANDSHAKE_FRAME_BYTES), accept(&mut b, "n2", &s, [2; 32]));
        sent.expect("sent");
        assert!(matches!(accepted, Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: 99 })), "{accepted:?}");
        let reply: Msg = read_header(&mut a, HANDSHAKE_FRAME_BYTES).await.expect("a refusal");
        assert!(matches!(reply, Msg::Refused { ref reason } if reason.contains("protocol 99")), "{reply:?}");
    }

    #[tokio::test]
    async fn garbage_instead_of_a_hello_is_an_error_not_a_panic() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        drop(a);
        let err = accept(&mut b, "n2", &secret("the-shared-secret-0001"), [2; 32]).await.expect_err("garbage");
        assert!(matches!(err, HandshakeError::Frame(FrameError::TooLarge { .. } | FrameError::Malformed(_))), "{err}");
    }
}
