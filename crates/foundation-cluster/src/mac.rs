//! The record MAC: a Carter–Wegman tag, POLYVAL (RFC 8452) over the
//! content, masked with a pseudorandom value unique to the record.
//!
//! ```text
//! tag = POLYVAL_H(content ‖ zero padding to 16 ‖ len u64 LE ‖ seq u64 LE) ⊕ mask(seq)
//! mask(seq) = BLAKE3-keyed(mask key; seq u64 LE), first 16 bytes
//! (H, mask key) = BLAKE3-derive-key("foundation mesh record mac v1", direction key)
//! ```
//!
//! - **Why this MAC.** A record is hashed by its writer and by its reader,
//!   and an RPC with a 1 MiB payload crosses four times. Keyed BLAKE3 (about
//!   9 GB/s on one core here) took 45 % of `remote.echo_1mib`'s CPU. POLYVAL
//!   is a multiply per 16 bytes in GF(2^128), and the CPU's carry-less
//!   multiply does four of them per instruction on 512-bit registers: about
//!   30 GB/s on one core ([`wide`]).
//! - **Why it is a MAC.** POLYVAL is a universal hash: for two different
//!   messages of at most `n` blocks, the chance that they hash alike under a
//!   random secret `H` is at most `n / 2^128`. The mask is a PRF of the
//!   sequence number, which never repeats under one key, so each tag is
//!   hidden from an attacker and a tag seen once says nothing about another
//!   record's. This is GMAC's construction with BLAKE3 as the PRF.
//! - **The length block** makes two contents that differ only by trailing
//!   zero bytes hash differently, and binds the announced length.
//! - **Four implementations, one function.** On x86-64, [`wide`]: with
//!   AVX-512 (F, BW) and VPCLMULQDQ, 32 blocks per reduction; with AVX2
//!   and VPCLMULQDQ, 16; with PCLMULQDQ alone, 8. Elsewhere the `polyval`
//!   crate (carry-less multiply, ARMv8 PMULL or constant-time software),
//!   which reduces after every block. Nodes on different CPUs compute the same tags; the tests
//!   check each engine against the `polyval` crate. (Unoptimized, as the
//!   tests build this crate, the PCLMULQDQ engine hashes about 150 MB/s,
//!   slower than the optimized `polyval` dependency: it was what exposed
//!   the appends that a slow link timed out for ever, `append_ttl`.)

use polyval::Polyval;
use polyval::universal_hash::{KeyInit, UniversalHash};

#[cfg(target_arch = "x86_64")]
mod wide;

/// Bytes of a tag.
pub const TAG_BYTES: usize = 16;
const BLOCK: usize = 16;
const CONTEXT: &str = "foundation mesh record mac v1";

/// One direction's MAC key, expanded once per connection.
pub struct MacKey {
    h: [u8; BLOCK],
    mask: [u8; 32],
    #[cfg(target_arch = "x86_64")]
    wide: Option<Box<wide::Keys>>,
}

impl MacKey {
    /// Expands a 32-byte direction key (from the handshake).
    pub fn new(key: &[u8; 32]) -> MacKey {
        let mut out = [0u8; BLOCK + 32];
        let mut derive = blake3::Hasher::new_derive_key(CONTEXT);
        derive.update(key);
        derive.finalize_xof().fill(&mut out);
        let (h, mask) = out.split_at(BLOCK);
        let h: [u8; BLOCK] = h.try_into().expect("16 bytes");
        MacKey {
            h,
            mask: mask.try_into().expect("32 bytes"),
            #[cfg(target_arch = "x86_64")]
            wide: wide::Keys::new(&h).map(Box::new),
        }
    }

    /// A MAC over one record's content, fed in any number of pieces.
    pub fn start(&self) -> Mac<'_> {
        Mac { key: self, state: State::new(self), partial: [0; BLOCK], partial_len: 0, len: 0 }
    }

    /// The engine this key hashes with on this CPU: `"avx512"`, `"avx2"`
    /// or `"pclmulqdq"` ([`wide`]'s), or `"portable"` (the `polyval`
    /// crate).
    pub fn engine(&self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if let Some(keys) = &self.wide {
            return keys.engine();
        }
        "portable"
    }

    /// Whether this key hashes with [`wide`]'s engines (several blocks per
    /// reduction), not the `polyval` crate.
    pub fn is_wide(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.wide.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }
}

enum State {
    #[cfg(target_arch = "x86_64")]
    Wide(u128),
    Portable(Box<Polyval>),
}

impl State {
    fn new(key: &MacKey) -> State {
        #[cfg(target_arch = "x86_64")]
        if key.wide.is_some() {
            return State::Wide(0);
        }
        State::Portable(Box::new(Polyval::new(&key.h.into())))
    }
}

/// A MAC in progress ([`MacKey::start`]).
pub struct Mac<'k> {
    key: &'k MacKey,
    state: State,
    partial: [u8; BLOCK],
    partial_len: usize,
    len: u64,
}

impl Mac<'_> {
    /// Adds content bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.partial_len > 0 {
            let take = (BLOCK - self.partial_len).min(data.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            if self.partial_len < BLOCK {
                return;
            }
            let block = self.partial;
            self.blocks(&block);
            self.partial_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        self.blocks(&data[..whole]);
        let rest = &data[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    /// `data.len()` is a multiple of 16.
    fn blocks(&mut self, data: &[u8]) {
        debug_assert_eq!(data.len() % BLOCK, 0);
        match &mut self.state {
            #[cfg(target_arch = "x86_64")]
            State::Wide(acc) => {
                let keys = self.key.wide.as_deref().expect("a wide state has wide keys");
                *acc = keys.blocks(*acc, data);
            }
            State::Portable(p) => p.update_padded(data),
        }
    }

    /// The tag of record `seq`, whose content was everything added.
    pub fn finish(mut self, seq: u64) -> [u8; TAG_BYTES] {
        let len = self.len;
        if self.partial_len > 0 {
            self.partial[self.partial_len..].fill(0);
            let block = self.partial;
            self.blocks(&block);
        }
        let mut last = [0u8; BLOCK];
        last[..8].copy_from_slice(&len.to_le_bytes());
        last[8..].copy_from_slice(&seq.to_le_bytes());
        self.blocks(&last);
        let mut tag: [u8; TAG_BYTES] = match self.state {
            #[cfg(target_arch = "x86_64")]
            State::Wide(acc) => acc.to_le_bytes(),
            State::Portable(p) => p.finalize().into(),
        };
        let mask = blake3::keyed_hash(&self.key.mask, &seq.to_le_bytes());
        for (t, m) in tag.iter_mut().zip(mask.as_bytes()) {
            *t ^= m;
        }
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    /// POLYVAL alone, through the chosen engine: the MAC without its
    /// length block and mask.
    fn polyval(key: &MacKey, h: [u8; BLOCK], data: &[u8]) -> [u8; BLOCK] {
        let mut m = key.start();
        if let State::Portable(p) = &mut m.state {
            **p = Polyval::new(&h.into());
        }
        m.blocks(data);
        match m.state {
            #[cfg(target_arch = "x86_64")]
            State::Wide(acc) => acc.to_le_bytes(),
            State::Portable(p) => p.finalize().into(),
        }
    }

    #[test]
    fn polyval_matches_rfc_8452() {
        // RFC 8452, Appendix A.
        let h: [u8; BLOCK] = hex("25629347589242761d31f826ba4b757b").try_into().expect("16");
        let data = [hex("4f4f95668c83dfb6401762bb2d01a262"), hex("d1a24ddd2721d006bbe45f20d3c9f362")].concat();
        let want = hex("f7a3b47b846119fae5b7866cf5e5b77e");
        let mut key = MacKey::new(&[0; 32]);
        key.h = h;
        #[cfg(target_arch = "x86_64")]
        {
            key.wide = wide::Keys::new(&h).map(Box::new);
        }
        assert_eq!(polyval(&key, h, &data).to_vec(), want, "{}", key.engine());
        #[cfg(target_arch = "x86_64")]
        {
            key.wide = wide::Keys::ymm(&h).map(Box::new);
            assert_eq!(polyval(&key, h, &data).to_vec(), want, "ymm: {}", key.engine());
            key.wide = wide::Keys::narrow(&h).map(Box::new);
            assert_eq!(polyval(&key, h, &data).to_vec(), want, "narrow: {}", key.is_wide());
            key.wide = None;
        }
        assert_eq!(polyval(&key, h, &data).to_vec(), want, "portable");
    }

    /// The wide engines against the portable one, over lengths that hit
    /// every path (whole 512-, 256- and 128-byte rounds, 64- and 32-byte
    /// vectors, single blocks, a partial block) and pieces split anywhere.
    #[test]
    fn every_engine_gives_the_same_tags_however_the_content_is_split() {
        use rand::{Rng, RngCore, SeedableRng};
        let wide = MacKey::new(&[9; 32]);
        if !wide.is_wide() {
            eprintln!("no carry-less multiply here: only the portable engine runs");
            return;
        }
        let mut portable = MacKey::new(&[9; 32]);
        let mut narrow = MacKey::new(&[9; 32]);
        // Where the CPU lacks AVX2 and VPCLMULQDQ, the widest engine again.
        let mut ymm = MacKey::new(&[9; 32]);
        #[cfg(target_arch = "x86_64")]
        {
            portable.wide = None;
            narrow.wide = wide::Keys::narrow(&narrow.h).map(Box::new);
            if let Some(keys) = wide::Keys::ymm(&ymm.h) {
                ymm.wide = Some(Box::new(keys));
            }
        }
        eprintln!("engines: {}, {}, {}", wide.engine(), ymm.engine(), narrow.engine());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..400 {
            let len = match round % 4 {
                0 => rng.random_range(0..64),
                1 => rng.random_range(0..600),
                2 => rng.random_range(0..5000),
                _ => rng.random_range(0..70_000),
            };
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let seq = rng.random();
            let mut p = portable.start();
            p.update(&data);
            let want = p.finish(seq);
            // Each engine gets the content in pieces of up to `most` bytes.
            for (key, most) in [(&wide, 2000), (&narrow, 300), (&ymm, 700)] {
                let mut m = key.start();
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let k = rng.random_range(1..=rest.len().min(most));
                    m.update(&rest[..k]);
                    rest = &rest[k..];
                }
                assert_eq!(m.finish(seq), want, "{}: round {round}, {len} bytes", key.engine());
            }
        }
    }

    #[test]
    fn the_tag_depends_on_the_sequence_number_the_length_and_every_byte() {
        let key = MacKey::new(&[3; 32]);
        let tag = |data: &[u8], seq: u64| {
            let mut m = key.start();
            m.update(data);
            m.finish(seq)
        };
        let data = vec![0u8; 100];
        let base = tag(&data, 5);
        assert_ne!(base, tag(&data, 6), "another record number");
        assert_ne!(base, tag(&data[..99], 5), "one zero byte fewer");
        assert_ne!(base, tag(&[data.clone(), vec![0]].concat(), 5), "one zero byte more");
        for i in 0..data.len() {
            let mut flipped = data.clone();
            flipped[i] ^= 0x80;
            assert_ne!(base, tag(&flipped, 5), "byte {i} flipped");
        }
        let other_key = MacKey::new(&[4; 32]);
        let mut other = other_key.start();
        other.update(&data);
        assert_ne!(base, other.finish(5), "another key");
    }
}
