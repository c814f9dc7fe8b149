//! The connection handshake: protocol version and node names, a mutual
//! HMAC-SHA256 proof of the cluster secret in which the dialer proves
//! first, and the session keys that seal every record after it
//! ([`crate::seal`]).
//!
//! ```text
//! dialer → acceptor  Hello     { protocol, name_d, challenge_d, incarnation_d }   (Redial: the same, for a dial nobody asked for)
//! acceptor → dialer  Challenge { protocol, name_a, challenge_a, incarnation_a }   or Refused
//! dialer → acceptor  Proof     { proof_d }         (the dialer first checks name_a is the node it meant to reach)
//! acceptor → dialer  Confirm   { proof_a }          or Refused (bad proof, or not admitted)
//!
//! transcript = SHA-256(protocol, kind, name_d, name_a, challenge_d, challenge_a, incarnation_d, incarnation_a)
//! proof_d    = HMAC-SHA256(secret, "foundation/3 dialer"   ‖ transcript)
//! proof_a    = HMAC-SHA256(secret, "foundation/3 acceptor" ‖ transcript)
//! keys       = HKDF-SHA256(ikm = secret, salt = transcript, info = "foundation/3 session keys") → 64 bytes:
//!              dialer→acceptor key, acceptor→dialer key
//! ```
//!
//! - **The dialer proves first.** Whoever connects to a node learns its
//!   name and a fresh challenge, and nothing that depends on the secret,
//!   until it has proven the secret itself: an acceptor is no oracle for
//!   guessing a weak secret offline.
//! - **Both challenges are fresh** ([`foundation::rt::Rt::fill_secure`]:
//!   the OS CSPRNG, or the seed under simulation), so a captured proof or
//!   record is worth nothing on another connection.
//! - **The names are checked.** The proofs bind both names, so neither side
//!   can be told another's; a dialer that expects a name at the address it
//!   dials ([`dial_expecting`]) refuses any other before proving anything.
//! - **Keys per connection and direction**, derived from the whole
//!   transcript: see `seal.rs` for what they stop.
//!
//! Each side also says which incarnation of its node it is (a number
//! drawn when its `Cluster` started): a connection that replaces another
//! between the same two incarnations continues its session (a reply to a
//! call made on the old one still counts), while one from a restarted node
//! starts a new session.
//!
//! Every step is bounded by the caller's timeout and the frame limit
//! [`HANDSHAKE_FRAME_BYTES`]. The postcard tags of `Hello` (0), `Refused`
//! (4) and `Redial` (5) and the leading `protocol` field are the same in
//! every version, so that builds of another version refuse each other with
//! a reason rather than a parse error.
//!
//! A dial the mesh makes on its own (a re-dial after a loss, a peer learned
//! from another) says so with `Redial` instead of `Hello`, so that a node
//! that disconnected from the dialer can refuse it ([`accept_if`]) while an
//! explicit connect still gets through.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{FrameError, read_header, write_header};
use crate::seal::SessionKeys;
use crate::secret::ClusterSecret;

/// The wire protocol version this build speaks (4: records carry a
/// POLYVAL tag, `crate::mac`; 3 carried keyed BLAKE3).
pub const PROTOCOL_VERSION: u32 = 4;
/// Largest handshake frame (names are short).
pub const HANDSHAKE_FRAME_BYTES: usize = 4096;
/// Bytes of a challenge.
pub const CHALLENGE_BYTES: usize = 32;

type Challenge = [u8; CHALLENGE_BYTES];

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Msg {
    Hello {
        protocol: u32,
        name: String,
        challenge: Challenge,
        incarnation: u64,
    },
    Challenge {
        protocol: u32,
        name: String,
        challenge: Challenge,
        incarnation: u64,
    },
    Proof {
        proof: Vec<u8>,
    },
    Confirm {
        proof: Vec<u8>,
    },
    Refused {
        reason: String,
    },
    /// A `Hello` for a dial the mesh made on its own.
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
    /// The node at the dialed address is not the one expected there.
    #[error("expected node `{expected}` at this address, found `{found}`")]
    WrongPeer {
        /// The name the dialer expected.
        expected: String,
        /// The name the acceptor gave.
        found: String,
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

/// What both sides agree on; every proof and key depends on all of it.
struct Transcript([u8; 32]);

impl Transcript {
    fn new(kind: DialKind, dialer: (&str, &Challenge, u64), acceptor: (&str, &Challenge, u64)) -> Self {
        let mut h = Sha256::new();
        h.update(b"foundation/3 transcript");
        h.update(PROTOCOL_VERSION.to_be_bytes());
        h.update([u8::from(kind == DialKind::Redial)]);
        for (name, challenge, incarnation) in [dialer, acceptor] {
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update(challenge);
            h.update(incarnation.to_be_bytes());
        }
        Self(h.finalize().into())
    }

    fn proof(&self, secret: &ClusterSecret, label: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(&self.0);
        mac
    }

    fn keys(&self, secret: &ClusterSecret, dialer: bool) -> SessionKeys {
        let mut okm = [0u8; 64];
        hkdf::Hkdf::<Sha256>::new(Some(&self.0), secret.bytes())
            .expand(b"foundation/3 session keys", &mut okm)
            .expect("64 bytes is a valid HKDF-SHA256 length");
        let (d2a, a2d) = okm.split_at(32);
        let (d2a, a2d): ([u8; 32], [u8; 32]) = (d2a.try_into().expect("32"), a2d.try_into().expect("32"));
        if dialer { SessionKeys { send: d2a, recv: a2d } } else { SessionKeys { send: a2d, recv: d2a } }
    }
}

const DIALER: &[u8] = b"foundation/3 dialer";
const ACCEPTOR: &[u8] = b"foundation/3 acceptor";

async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, reason: String) {
    // Best effort: the peer may already be gone.
    let _ = write_header(s, &Msg::Refused { reason }, HANDSHAKE_FRAME_BYTES).await;
}

/// Who the other side of a handshake proved to be, and the keys of the
/// connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node name.
    pub name: String,
    /// Its incarnation (see the module docs).
    pub incarnation: u64,
    /// The keys that seal this connection's records ([`crate::seal`]).
    pub keys: SessionKeys,
}

/// The dialing side, as incarnation 0, accepting whichever node answers.
/// Returns the peer once both sides are proven.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &str,
    secret: &ClusterSecret,
    challenge: Challenge,
) -> Result<Peer, HandshakeError> {
    dial_expecting(s, me, 0, secret, challenge, DialKind::Connect, None).await
}

/// [`dial`], saying which kind of dial this is and, if known, which node
/// is expected at the address: any other is refused before this side
/// proves anything ([`HandshakeError::WrongPeer`]).
pub async fn dial_expecting<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    me: &str,
    incarnation: u64,
    secret: &ClusterSecret,
    challenge: Challenge,
    kind: DialKind,
    expected: Option<&str>,
) -> Result<Peer, HandshakeError> {
    let (protocol, name) = (PROTOCOL_VERSION, me.to_owned());
    let hello = match kind {
        DialKind::Connect => Msg::Hello { protocol, name, challenge, incarnation },
        DialKind::Redial => Msg::Redial { protocol, name, challenge, incarnation },
    };
    write_header(s, &hello, HANDSHAKE_FRAME_BYTES).await?;
    let (peer, their_challenge, their_incarnation) = match read_header(s, HANDSHAKE_FRAME_BYTES).await? {
        Msg::Challenge { protocol, .. } if protocol != PROTOCOL_VERSION => {
            return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: protocol });
        }
        Msg::Challenge { name, challenge, incarnation, .. } => (name, challenge, incarnation),
        Msg::Refused { reason } => return Err(HandshakeError::Refused(reason)),
        other => return Err(HandshakeError::Protocol(format!("expected Challenge, got {other:?}"))),
    };
    if let Some(expected) = expected.filter(|e| *e != peer) {
        return Err(HandshakeError::WrongPeer { expected: expected.to_owned(), found: peer });
    }
    let transcript = Transcript::new(kind, (me, &challenge, incarnation), (&peer, &their_challenge, their_incarnation));
    let proof = transcript.proof(secret, DIALER).finalize().into_bytes().to_vec();
    write_header(s, &Msg::Proof { proof }, HANDSHAKE_FRAME_BYTES).await?;
    match read_header(s, HANDSHAKE_FRAME_BYTES).await? {
        Msg::Confirm { proof } => {
            if transcript.proof(secret, ACCEPTOR).verify_slice(&proof).is_err() {
                return Err(HandshakeError::BadSecret { peer });
            }
        }
        Msg::Refused { reason } => return Err(HandshakeError::Refused(reason)),
        other => return Err(HandshakeError::Protocol(format!("expected Confirm, got {other:?}"))),
    }
    Ok(Peer { name: peer, incarnation: their_incarnation, keys: transcript.keys(secret, true) })
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
/// `Refused` with the reason instead of `Confirm`.
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
    let ask = Msg::Challenge { protocol: PROTOCOL_VERSION, name: me.to_owned(), challenge, incarnation };
    write_header(s, &ask, HANDSHAKE_FRAME_BYTES).await?;
    let transcript = Transcript::new(kind, (&peer, &their_challenge, their_incarnation), (me, &challenge, incarnation));
    match read_header(s, HANDSHAKE_FRAME_BYTES).await? {
        Msg::Proof { proof } => {
            if transcript.proof(secret, DIALER).verify_slice(&proof).is_err() {
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
    let proof = transcript.proof(secret, ACCEPTOR).finalize().into_bytes().to_vec();
    write_header(s, &Msg::Confirm { proof }, HANDSHAKE_FRAME_BYTES).await?;
    Ok(Peer { name: peer, incarnation: their_incarnation, keys: transcript.keys(secret, false) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const SECRET: &str = "the-shared-secret-0001-the-shared-secret";

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text, "test").expect("valid")
    }

    async fn pair(dialer_secret: &str, acceptor_secret: &str) -> (Result<Peer, HandshakeError>, Result<Peer, HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let (ds, as_) = (secret(dialer_secret), secret(acceptor_secret));
        // Each side hangs up when it is done, as a real connection would.
        let dialer = async move {
            let r = dial_expecting(&mut a, "n1", 11, &ds, [1; 32], DialKind::Connect, None).await;
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
        let (d, a) = pair(SECRET, SECRET).await;
        let (d, a) = (d.expect("dialer ok"), a.expect("acceptor ok"));
        assert_eq!((d.name.as_str(), d.incarnation), ("n2", 22));
        assert_eq!((a.name.as_str(), a.incarnation), ("n1", 11));
        // Each side sends with the key the other receives with.
        assert_eq!((d.keys.send, d.keys.recv), (a.keys.recv, a.keys.send));
        assert_ne!(d.keys.send, d.keys.recv);
    }

    /// The dialer proves first; the acceptor refuses a wrong proof and
    /// never sends one of its own.
    #[tokio::test]
    async fn a_wrong_secret_is_refused_by_the_acceptor_before_it_proves_anything() {
        let (d, a) = pair(SECRET, "another-secret-xxxxxxxxxxxxxxxxxxx02").await;
        assert!(matches!(d, Err(HandshakeError::Refused(ref why)) if why.contains("secret")), "{d:?}");
        assert!(matches!(a, Err(HandshakeError::BadSecret { ref peer }) if peer == "n1"), "{a:?}");
    }

    #[tokio::test]
    async fn an_acceptor_says_nothing_secret_dependent_before_the_dialer_proves() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let s = secret(SECRET);
        let hello = Msg::Hello { protocol: PROTOCOL_VERSION, name: "probe".into(), challenge: [3; 32], incarnation: 0 };
        let probe = async {
            write_header(&mut a, &hello, HANDSHAKE_FRAME_BYTES).await.expect("sent");
            let reply: Msg = read_header(&mut a, HANDSHAKE_FRAME_BYTES).await.expect("a challenge");
            assert!(matches!(reply, Msg::Challenge { ref name, challenge, .. } if name == "n2" && challenge == [2; 32]), "{reply:?}");
            // A guess is refused with no proof in return.
            write_header(&mut a, &Msg::Proof { proof: vec![0; 32] }, HANDSHAKE_FRAME_BYTES).await.expect("sent");
            let reply: Msg = read_header(&mut a, HANDSHAKE_FRAME_BYTES).await.expect("a refusal");
            assert!(matches!(reply, Msg::Refused { .. }), "{reply:?}");
        };
        let (accepted, ()) = tokio::join!(accept(&mut b, "n2", &s, [2; 32]), probe);
        assert!(matches!(accepted, Err(HandshakeError::BadSecret { .. })), "{accepted:?}");
    }

    #[tokio::test]
    async fn a_dialer_refuses_a_node_it_did_not_expect_before_proving() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let s = secret(SECRET);
        let dialer = async {
            let r = dial_expecting(&mut a, "n1", 0, &s, [1; 32], DialKind::Connect, Some("n2")).await;
            drop(a);
            r
        };
        let (accepted, dialed) = tokio::join!(accept(&mut b, "n3", &s, [2; 32]), dialer);
        let err = dialed.expect_err("wrong node");
        assert!(matches!(err, HandshakeError::WrongPeer { ref expected, ref found } if expected == "n2" && found == "n3"), "{err}");
        // The acceptor never got a proof.
        assert!(matches!(accepted, Err(HandshakeError::Frame(_))), "{accepted:?}");
    }

    #[tokio::test]
    async fn two_handshakes_with_other_challenges_get_other_keys() {
        let keys = |c: u8| async move {
            let (mut a, mut b) = tokio::io::duplex(8192);
            let s = secret(SECRET);
            let (accepted, dialed) = tokio::join!(accept(&mut b, "n2", &s, [c; 32]), dial(&mut a, "n1", &s, [1; 32]));
            accepted.expect("accepted");
            dialed.expect("dialed").keys
        };
        assert_ne!(keys(2).await, keys(3).await);
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_with_the_reason() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let s = secret(SECRET);
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
        let err = accept(&mut b, "n2", &secret(SECRET), [2; 32]).await.expect_err("garbage");
        assert!(matches!(err, HandshakeError::Frame(FrameError::TooLarge { .. } | FrameError::Malformed(_))), "{err}");
    }
}
