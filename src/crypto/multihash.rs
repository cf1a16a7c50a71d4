//! Hashing many independent messages at once.
//!
//! Tahoe hashes every block of every share separately; those hashes are independent, and a single
//! SHA-256 stream is latency-bound, so hashing several messages interleaved is faster. This module
//! is the one entry point for that: callers hand over a batch and get the hashes in order.
//!
//! Design:
//! - every message is `prefix ‖ m` (the prefix is `ns(tag)` for tagged hashes). The prefix's full
//!   64-byte blocks are compressed once into a shared midstate; its remaining `< 64` bytes are
//!   copied into the message's first block. Each message then becomes a `Job` of at most three
//!   runs of whole blocks: a copied head block, the message bytes themselves (no copy), and a
//!   copied tail of one or two blocks holding the last bytes and the SHA-256 padding;
//! - two lanes run jobs side by side. Each step compresses as many blocks as both lanes' current
//!   runs have, so lanes of unequal length simply drift apart; a lane that finishes takes the next
//!   message. Messages are taken longest first, so the run where only one lane is left is short;
//!   once no message is left, the last lane finishes alone;
//! - the outer SHA-256 of each 32-byte inner digest is a single block, done two at a time too.
//!
//! Streams: a [`Sha256Stream`] is a SHA-256 fed in pieces (a midstate, the `< 64` bytes not yet
//! compressed, and the length so far). [`update_many`] feeds one piece into each of several
//! streams with the same two lanes: a piece becomes a job of a copied head block (the pending
//! bytes completed from the piece) and the piece's whole blocks (no copy); its last `< 64` bytes
//! become the stream's pending bytes. This lets a long-running hash (Tahoe's whole-file
//! crypttext hash) share lanes with per-segment hashes of the same bytes.
//!
//! Wide engine: on a CPU with AVX-512 the lanes are sixteen (see `sha256_x16`): each step
//! compresses as many blocks as every busy lane's current run has, for all of them at once, and a
//! lane that finishes takes the next message, longest first. A wide step costs the same whatever
//! the number of busy lanes, so once fewer than `MIN_WIDE_LANES` (6) lanes have work the rest goes
//! to the two-lane engine. Single-block outer hashes go sixteen at a time too.
//!
//! The block compressor is the `Engine`: two-lane SHA-NI when the CPU has it (see `sha256_x2`),
//! else `sha2::compress256` one lane after the other, plus the sixteen-lane kernel when the CPU
//! has AVX-512. The job and lane logic is the same for all, so tests run it with each engine
//! against `hash::tagged_hash`. `LAFS_SHA256_ENGINE=portable|shani|avx512` caps the engine chosen
//! at run time (to compare them; the default is the best the CPU has).

#[cfg(target_arch = "x86_64")]
#[path = "sha256_x16.rs"]
mod sha256_x16;
#[cfg(target_arch = "x86_64")]
#[path = "sha256_x2.rs"]
mod sha256_x2;

use super::hash::Hash;
use crate::util::netstring;
use sha2::digest::generic_array::GenericArray;

/// The SHA-256 round constants (FIPS 180-4 §4.2.2), for the SIMD kernels.
#[cfg(target_arch = "x86_64")]
static K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 initial state (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// `tagged_hash(tag, m)` = `SHA256d(ns(tag) ‖ m)` for every message, in order.
pub fn tagged_hash_many(tag: &[u8], messages: &[&[u8]]) -> Vec<Hash> {
    sha256d_many(&netstring::netstring(tag), messages)
}

/// `SHA256(SHA256(prefix ‖ m))` for every message, in order.
pub fn sha256d_many(prefix: &[u8], messages: &[&[u8]]) -> Vec<Hash> {
    sha256d_many_with(Engine::detect(), prefix, messages)
}

/// `tagged_hash(tag, m)` for every message of every group `(tag, messages)`: one result list per
/// group, in order. Every message of every group shares the same lanes, so a batch of a few
/// messages per tag (the k block hashes and the crypttext segment hash of one segment) keeps
/// the lanes as busy as one batch of all of them would.
pub fn tagged_hash_groups(groups: &[(&[u8], &[&[u8]])]) -> Vec<Vec<Hash>> {
    let prefixes: Vec<Vec<u8>> = groups
        .iter()
        .map(|(tag, _)| netstring::netstring(tag))
        .collect();
    let groups: Vec<(&[u8], &[&[u8]])> = prefixes
        .iter()
        .zip(groups)
        .map(|(p, (_, m))| (p.as_slice(), *m))
        .collect();
    sha256d_groups_with(Engine::detect(), &groups)
}

/// How many messages a batch should hold to keep this machine's engine busy: 16 with the
/// AVX-512 engine, else 2. Callers that can choose how to group their hashes use it.
pub fn lanes() -> usize {
    Engine::detect().lanes()
}

/// The engine chosen at run time, by name (`portable`, `shani`, `avx512`), for benchmarks.
pub fn engine_name() -> &'static str {
    match Engine::detect() {
        Engine::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Engine::ShaNi(_) => "shani",
        #[cfg(target_arch = "x86_64")]
        Engine::Avx512 { .. } => "avx512",
    }
}

/// Fewer busy lanes than this and a wide step is slower than the two-lane engine: a 16-lane
/// AVX-512 step costs the same at any occupancy, and measured on an Intel Xeon (Ice Lake class)
/// 5 busy lanes ran at 1.15 GB/s against 1.33 GB/s for one SHA-NI lane, 8 at 1.83 GB/s.
#[cfg(target_arch = "x86_64")]
const MIN_WIDE_LANES: usize = 6;

/// The block compressor.
#[derive(Clone, Copy, Debug)]
enum Engine {
    /// `sha2::compress256` (itself SHA-NI accelerated where available, but one stream at a time).
    Portable,
    #[cfg(target_arch = "x86_64")]
    ShaNi(sha256_x2::ShaNi),
    /// Sixteen lanes of AVX-512 for wide batches; `narrow` (SHA-NI, else portable) for the rest.
    #[cfg(target_arch = "x86_64")]
    Avx512 {
        wide: sha256_x16::Avx512,
        narrow: Option<sha256_x2::ShaNi>,
    },
}

impl Engine {
    fn detect() -> Engine {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static DETECTED: OnceLock<Engine> = OnceLock::new();
            *DETECTED.get_or_init(|| {
                let cap = std::env::var("LAFS_SHA256_ENGINE").unwrap_or_default();
                let ni = match cap.as_str() {
                    "portable" => None,
                    _ => sha256_x2::ShaNi::detect(),
                };
                let wide = match cap.as_str() {
                    "portable" | "shani" => None,
                    _ => sha256_x16::Avx512::detect(),
                };
                match (wide, ni) {
                    (Some(wide), narrow) => Engine::Avx512 { wide, narrow },
                    (None, Some(t)) => Engine::ShaNi(t),
                    (None, None) => Engine::Portable,
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Engine::Portable
    }

    /// The engine for runs too narrow for the wide one.
    fn narrow(self) -> Engine {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 {
                narrow: Some(t), ..
            } => Engine::ShaNi(t),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 { narrow: None, .. } => Engine::Portable,
            e => e,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn wide(self) -> Option<sha256_x16::Avx512> {
        match self {
            Engine::Avx512 { wide, .. } => Some(wide),
            _ => None,
        }
    }

    fn lanes(self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self.wide().is_some() {
            return sha256_x16::LANES;
        }
        2
    }

    /// Compresses whole 64-byte blocks into `state`.
    fn x1(self, state: &mut [u32; 8], blocks: &[u8]) {
        match self {
            Engine::Portable => {
                for block in blocks.chunks_exact(64) {
                    sha2::compress256(
                        state,
                        core::slice::from_ref(GenericArray::from_slice(block)),
                    );
                }
            }
            #[cfg(target_arch = "x86_64")]
            Engine::ShaNi(t) => t.x1(state, blocks),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 { .. } => self.narrow().x1(state, blocks),
        }
    }

    /// Compresses `b0` into `s0` and `b1` into `s1`; both hold the same number of whole blocks.
    fn x2(self, s0: &mut [u32; 8], s1: &mut [u32; 8], b0: &[u8], b1: &[u8]) {
        match self {
            Engine::Portable => {
                self.x1(s0, b0);
                self.x1(s1, b1);
            }
            #[cfg(target_arch = "x86_64")]
            Engine::ShaNi(t) => t.x2(s0, s1, b0, b1),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 { .. } => self.narrow().x2(s0, s1, b0, b1),
        }
    }
}

/// The shared prefix: the state after its whole blocks, and the bytes left over.
struct Prefix {
    midstate: [u32; 8],
    rest: [u8; 64],
    /// Bytes used in `rest`, `< 64`.
    rest_len: usize,
    /// Total prefix length in bytes.
    len: u64,
}

impl Prefix {
    fn new(engine: Engine, prefix: &[u8]) -> Prefix {
        let whole = prefix.len() - prefix.len() % 64;
        let (blocks, tail) = prefix.split_at(whole);
        let mut midstate = IV;
        engine.x1(&mut midstate, blocks);
        let mut rest = [0u8; 64];
        rest[..tail.len()].copy_from_slice(tail);
        Prefix {
            midstate,
            rest,
            rest_len: tail.len(),
            len: prefix.len() as u64,
        }
    }
}

/// One message's padded stream `prefix rest ‖ m ‖ padding` (after the midstate), as three runs of
/// whole blocks: `head` (copied, 0 or 64 bytes), `body` (borrowed from the message), `tail`
/// (copied, 64 or 128 bytes).
struct Job<'a> {
    head: [u8; 64],
    head_len: usize,
    body: &'a [u8],
    tail: [u8; 128],
    tail_len: usize,
}

impl<'a> Job<'a> {
    fn new(prefix: &Prefix, msg: &'a [u8]) -> Job<'a> {
        let pre = &prefix.rest[..prefix.rest_len];
        let mut head = [0u8; 64];
        let mut tail = [0u8; 128];
        // Bytes of the stream that go into `tail` before the message's leftover.
        let mut tail_fill = 0;
        let (head_len, rest) = if pre.is_empty() {
            (0, msg)
        } else if msg.len() >= 64 - pre.len() {
            let (first, rest) = msg.split_at(64 - pre.len());
            head[..pre.len()].copy_from_slice(pre);
            head[pre.len()..].copy_from_slice(first);
            (64, rest)
        } else {
            // Too short to fill a block: the prefix rest opens the tail instead.
            tail[..pre.len()].copy_from_slice(pre);
            tail_fill = pre.len();
            (0, msg)
        };
        let (body, leftover) = rest.split_at(rest.len() - rest.len() % 64);
        // `tail_fill + leftover.len() < 64` in every branch above.
        let end = tail_fill + leftover.len();
        tail[tail_fill..end].copy_from_slice(leftover);
        tail[end] = 0x80;
        let tail_len = if end + 9 <= 64 { 64 } else { 128 };
        let bits = (prefix.len + msg.len() as u64).wrapping_mul(8);
        tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_be_bytes());
        Job {
            head,
            head_len,
            body,
            tail,
            tail_len,
        }
    }

    /// The whole blocks of `pending ‖ data` (`pending` shorter than 64 bytes), and the bytes
    /// of `data` left after them (fewer than 64). With fewer than 64 bytes in all the job is
    /// empty and every byte of `data` is left over.
    fn update(pending: &[u8], data: &'a [u8]) -> (Job<'a>, &'a [u8]) {
        let mut head = [0u8; 64];
        let empty = |leftover| {
            let job = Job {
                head: [0u8; 64],
                head_len: 0,
                body: &[],
                tail: [0u8; 128],
                tail_len: 0,
            };
            (job, leftover)
        };
        let need = 64 - pending.len();
        let (head_len, rest) = if pending.is_empty() {
            (0, data)
        } else if data.len() >= need {
            let (first, rest) = data.split_at(need);
            head[..pending.len()].copy_from_slice(pending);
            head[pending.len()..].copy_from_slice(first);
            (64, rest)
        } else {
            return empty(data);
        };
        let (body, leftover) = rest.split_at(rest.len() - rest.len() % 64);
        let job = Job {
            head,
            head_len,
            body,
            tail: [0u8; 128],
            tail_len: 0,
        };
        (job, leftover)
    }

    /// Run `i` of the stream (0 = head, 1 = body, 2 = tail; empty past the end).
    fn run(&self, i: usize) -> &[u8] {
        match i {
            0 => &self.head[..self.head_len],
            1 => self.body,
            2 => &self.tail[..self.tail_len],
            _ => &[],
        }
    }
}

/// A job in progress.
struct Lane<'a> {
    job: Job<'a>,
    state: [u32; 8],
    /// Current run (0..=2; 3 = done) and offset in it; never left on an empty run.
    run: usize,
    off: usize,
    /// Index of the message in the caller's batch.
    index: usize,
}

impl<'a> Lane<'a> {
    fn new(job: Job<'a>, state: [u32; 8], index: usize) -> Lane<'a> {
        let mut lane = Lane {
            job,
            state,
            run: 0,
            off: 0,
            index,
        };
        lane.skip_empty();
        lane
    }

    /// Bytes left to compress.
    fn remaining(&self) -> usize {
        (self.run..3)
            .map(|r| self.job.run(r).len())
            .sum::<usize>()
            .saturating_sub(self.off)
    }

    fn skip_empty(&mut self) {
        while self.run < 3 && self.off == self.job.run(self.run).len() {
            self.run += 1;
            self.off = 0;
        }
    }

    fn done(&self) -> bool {
        self.run >= 3
    }

    /// The unprocessed rest of the current run.
    #[cfg(target_arch = "x86_64")]
    fn rest(&self) -> &[u8] {
        self.job.run(self.run).get(self.off..).unwrap_or(&[])
    }

    /// The state and the unprocessed rest of the current run.
    fn parts(&mut self) -> (&mut [u32; 8], &[u8]) {
        let rest = self.job.run(self.run).get(self.off..).unwrap_or(&[]);
        (&mut self.state, rest)
    }

    fn advance(&mut self, n: usize) {
        self.off += n;
        self.skip_empty();
    }

    /// Compresses everything left, alone.
    fn finish(&mut self, engine: Engine) {
        while !self.done() {
            let (state, rest) = self.parts();
            let n = rest.len();
            engine.x1(state, rest);
            self.advance(n);
        }
    }
}

fn digest_bytes(state: &[u32; 8]) -> Hash {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// The single padded block SHA-256 hashes a 32-byte digest in.
fn outer_block(inner: &Hash) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..32].copy_from_slice(inner);
    b[32] = 0x80;
    b[62] = 0x01; // length: 256 bits, big-endian in bytes 56..64
    b
}

/// Runs every lane to its end, longest first (so that the narrow run at the end is as short as
/// it can be), and reports each lane's final state with its index: as many at once as the wide
/// engine takes while at least [`MIN_WIDE_LANES`] have work, the rest two at a time.
// Only the x86_64 wide path reorders the lanes and counts.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
fn run_lanes(engine: Engine, mut lanes: Vec<Lane<'_>>, mut done: impl FnMut(usize, &[u32; 8])) {
    lanes.sort_by_key(|l| core::cmp::Reverse(l.remaining()));
    #[cfg(target_arch = "x86_64")]
    if let Some(wide) = engine.wide().filter(|_| lanes.len() >= MIN_WIDE_LANES) {
        lanes = run_wide(wide, lanes, &mut done);
    }
    run_narrow(engine.narrow(), lanes, done);
}

/// Runs lanes (sorted longest first) sixteen at a time until fewer than [`MIN_WIDE_LANES`] have
/// work; returns those, still sorted longest first.
#[cfg(target_arch = "x86_64")]
fn run_wide<'a>(
    wide: sha256_x16::Avx512,
    lanes: Vec<Lane<'a>>,
    done: &mut impl FnMut(usize, &[u32; 8]),
) -> Vec<Lane<'a>> {
    use sha256_x16::LANES;
    let mut queue = lanes.into_iter();
    let mut busy: Vec<Lane<'a>> = queue.by_ref().take(LANES).collect();
    loop {
        let mut i = 0;
        while i < busy.len() {
            if busy[i].done() {
                done(busy[i].index, &busy[i].state);
                match queue.next() {
                    Some(next) => busy[i] = next,
                    None => {
                        busy.swap_remove(i);
                        continue;
                    }
                }
            }
            i += 1;
        }
        if busy.len() < MIN_WIDE_LANES {
            break;
        }
        let n = busy.iter().map(|l| l.rest().len()).min().unwrap_or(0);
        let mut states = [[0u32; 8]; LANES];
        for (s, l) in states.iter_mut().zip(&busy) {
            *s = l.state;
        }
        {
            let mut runs: [&[u8]; LANES] = [&[]; LANES];
            for (r, l) in runs.iter_mut().zip(&busy) {
                *r = &l.rest()[..n];
            }
            let k = busy.len();
            wide.x16(&mut states[..k], &runs[..k]);
        }
        for (l, s) in busy.iter_mut().zip(&states) {
            l.state = *s;
            l.advance(n);
        }
    }
    // Longest first again: the busy lanes have drifted.
    busy.extend(queue);
    busy.sort_by_key(|l| core::cmp::Reverse(l.remaining()));
    busy
}

/// Runs lanes (sorted longest first) two at a time.
fn run_narrow(engine: Engine, lanes: Vec<Lane<'_>>, mut done: impl FnMut(usize, &[u32; 8])) {
    let mut queue = lanes.into_iter();
    let mut a = queue.next();
    let mut b = queue.next();
    loop {
        match (&mut a, &mut b) {
            (Some(x), Some(y)) => {
                let (sx, rx) = x.parts();
                let (sy, ry) = y.parts();
                let n = rx.len().min(ry.len());
                engine.x2(sx, sy, &rx[..n], &ry[..n]);
                x.advance(n);
                y.advance(n);
            }
            (Some(x), None) | (None, Some(x)) => x.finish(engine),
            (None, None) => break,
        }
        for slot in [&mut a, &mut b] {
            if let Some(lane) = slot.as_ref().filter(|l| l.done()) {
                done(lane.index, &lane.state);
                *slot = queue.next();
            }
        }
    }
}

fn sha256d_many_with(engine: Engine, prefix: &[u8], messages: &[&[u8]]) -> Vec<Hash> {
    sha256d_groups_with(engine, &[(prefix, messages)])
        .pop()
        .unwrap_or_default()
}

/// `SHA256(SHA256(prefix ‖ m))` for every message of every group `(prefix, messages)`, all
/// messages in one set of lanes (each lane starts from its own group's prefix midstate).
fn sha256d_groups_with(engine: Engine, groups: &[(&[u8], &[&[u8]])]) -> Vec<Vec<Hash>> {
    let prefixes: Vec<Prefix> = groups.iter().map(|(p, _)| Prefix::new(engine, p)).collect();
    let total: usize = groups.iter().map(|(_, m)| m.len()).sum();
    let mut inner = vec![[0u8; 32]; total];
    let mut lanes = Vec::with_capacity(total);
    for (prefix, (_, messages)) in prefixes.iter().zip(groups) {
        for m in messages.iter() {
            let i = lanes.len();
            lanes.push(Lane::new(Job::new(prefix, m), prefix.midstate, i));
        }
    }
    run_lanes(engine, lanes, |i, state| inner[i] = digest_bytes(state));
    let mut outer = outer_many(engine, &inner).into_iter();
    groups
        .iter()
        .map(|(_, m)| outer.by_ref().take(m.len()).collect())
        .collect()
}

/// `SHA256(inner)` for every 32-byte digest, sixteen at a time with the wide engine, then two
/// at a time.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
fn outer_many(engine: Engine, inner: &[Hash]) -> Vec<Hash> {
    let mut out = vec![[0u8; 32]; inner.len()];
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if let Some(wide) = engine.wide() {
        use sha256_x16::LANES;
        for (ins, outs) in inner.chunks(LANES).zip(out.chunks_mut(LANES)) {
            if ins.len() < MIN_WIDE_LANES {
                break;
            }
            let blocks: Vec<[u8; 64]> = ins.iter().map(outer_block).collect();
            let runs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
            let mut states = [IV; LANES];
            wide.x16(&mut states[..ins.len()], &runs);
            for (o, s) in outs.iter_mut().zip(&states) {
                *o = digest_bytes(s);
            }
            done += ins.len();
        }
    }
    let engine = engine.narrow();
    let (inner, out_rest) = (&inner[done..], &mut out[done..]);
    let mut pairs_in = inner.chunks_exact(2);
    let mut pairs_out = out_rest.chunks_exact_mut(2);
    for (i, o) in (&mut pairs_in).zip(&mut pairs_out) {
        let (mut s0, mut s1) = (IV, IV);
        engine.x2(&mut s0, &mut s1, &outer_block(&i[0]), &outer_block(&i[1]));
        o[0] = digest_bytes(&s0);
        o[1] = digest_bytes(&s1);
    }
    if let ([i], [o]) = (pairs_in.remainder(), pairs_out.into_remainder()) {
        let mut s = IV;
        engine.x1(&mut s, &outer_block(i));
        *o = digest_bytes(&s);
    }
    out
}

/// A SHA-256 fed in pieces, alone ([`Sha256Stream::update`]) or alongside others
/// ([`update_many`]).
///
/// Invariant: `state` is the SHA-256 state after the first `len - pending_len` bytes (a whole
/// number of blocks); the last `pending_len < 64` bytes fed are in `pending`.
#[derive(Clone)]
pub struct Sha256Stream {
    state: [u32; 8],
    pending: [u8; 64],
    pending_len: usize,
    len: u64,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sha256Stream {
    /// Never shows the state: it may hash a secret (a convergence secret, a key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256Stream")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Sha256Stream {
    /// SHA-256 of nothing yet.
    pub fn new() -> Self {
        Sha256Stream {
            state: IV,
            pending: [0u8; 64],
            pending_len: 0,
            len: 0,
        }
    }

    /// A stream that has been fed `ns(tag)`: finished with [`Self::finalize_sha256d`] it
    /// gives Tahoe's `tagged_hash(tag, ...)` of what follows.
    pub fn tagged(tag: &[u8]) -> Self {
        let mut s = Self::new();
        s.update(&netstring::netstring(tag));
        s
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        update_many(&mut [self], &[data]);
    }

    /// Records that `data` was fed, once the job built from it has been compressed into
    /// `state` (`leftover` is what the job left: the new pending bytes, or all of `data`
    /// when the job was empty).
    fn absorb(&mut self, data: &[u8], job_was_empty: bool, leftover: &[u8]) {
        if job_was_empty {
            let end = self.pending_len + data.len();
            self.pending[self.pending_len..end].copy_from_slice(data);
            self.pending_len = end;
        } else {
            self.pending[..leftover.len()].copy_from_slice(leftover);
            self.pending_len = leftover.len();
        }
        self.len += data.len() as u64;
    }

    /// The SHA-256 of everything fed.
    pub fn finalize_sha256(&self) -> Hash {
        let engine = Engine::detect();
        let mut block = [0u8; 128];
        let p = self.pending_len;
        block[..p].copy_from_slice(&self.pending[..p]);
        block[p] = 0x80;
        let n = if p + 9 <= 64 { 64 } else { 128 };
        block[n - 8..n].copy_from_slice(&self.len.wrapping_mul(8).to_be_bytes());
        let mut state = self.state;
        engine.x1(&mut state, &block[..n]);
        digest_bytes(&state)
    }

    /// SHA-256 of the SHA-256 of everything fed (Tahoe's SHA256d).
    pub fn finalize_sha256d(&self) -> Hash {
        let mut state = IV;
        Engine::detect().x1(&mut state, &outer_block(&self.finalize_sha256()));
        digest_bytes(&state)
    }
}

/// Feeds `data[i]` into `streams[i]` for every `i`, two streams at a time. The streams must be
/// distinct; `data` pieces may overlap or be the same bytes.
///
/// # Panics
/// If the two slices differ in length (a caller bug, not an input condition).
pub fn update_many(streams: &mut [&mut Sha256Stream], data: &[&[u8]]) {
    update_many_with(Engine::detect(), streams, data);
}

fn update_many_with(engine: Engine, streams: &mut [&mut Sha256Stream], data: &[&[u8]]) {
    assert_eq!(streams.len(), data.len(), "one piece per stream");
    let mut lanes = Vec::with_capacity(streams.len());
    let mut leftovers = Vec::with_capacity(streams.len());
    for (i, (s, d)) in streams.iter().zip(data).enumerate() {
        let (job, leftover) = Job::update(&s.pending[..s.pending_len], d);
        let lane = Lane::new(job, s.state, i);
        leftovers.push((lane.done(), leftover));
        if !lane.done() {
            lanes.push(lane);
        }
    }
    run_lanes(engine, lanes, |i, state| streams[i].state = *state);
    for ((s, d), (empty, leftover)) in streams.iter_mut().zip(data).zip(leftovers) {
        s.absorb(d, empty, leftover);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash::{tagged_hash, tags};
    use crate::util::base32;
    use proptest::prelude::*;

    /// Every engine this machine can run.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    fn engines() -> Vec<Engine> {
        let mut v = vec![Engine::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            let ni = sha256_x2::ShaNi::detect();
            match ni {
                Some(t) => v.push(Engine::ShaNi(t)),
                None => eprintln!("SHA-NI not available: that engine is not tested"),
            }
            match sha256_x16::Avx512::detect() {
                Some(wide) => {
                    v.push(Engine::Avx512 { wide, narrow: None });
                    if ni.is_some() {
                        v.push(Engine::Avx512 { wide, narrow: ni });
                    }
                }
                None => eprintln!("AVX-512 not available: that engine is not tested"),
            }
        }
        v
    }

    fn reference(tag: &[u8], messages: &[&[u8]]) -> Vec<Hash> {
        messages.iter().map(|m| tagged_hash(tag, m)).collect()
    }

    fn check(tag: &[u8], messages: &[&[u8]]) {
        let want = reference(tag, messages);
        let prefix = netstring::netstring(tag);
        for e in engines() {
            assert_eq!(sha256d_many_with(e, &prefix, messages), want, "{e:?}");
        }
        assert_eq!(tagged_hash_many(tag, messages), want);
    }

    #[test]
    fn block_hash_of_empty_known_answer() {
        // From Tahoe's test_hashutil.py (digest §known answers).
        let want = "msjr5bh4evuh7fa3zw7uovixfbvlnstr5b65mrerwfnvjxig2jvq";
        let prefix = netstring::netstring(tags::BLOCK);
        for e in engines() {
            for n in 1..4 {
                let msgs = vec![&b""[..]; n];
                let got = sha256d_many_with(e, &prefix, &msgs);
                for h in got {
                    assert_eq!(base32::encode(&h), want, "{e:?}, {n} messages");
                }
            }
        }
    }

    #[test]
    fn sha256d_abc_known_answer() {
        // SHA256(SHA256("abc")), computed independently with Python's hashlib.
        let want = "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358";
        for e in engines() {
            let got = sha256d_many_with(e, b"", &[b"abc", b"abc", b"abc"]);
            for h in got {
                let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(hex, want, "{e:?}");
            }
        }
    }

    #[test]
    fn empty_batch() {
        assert!(tagged_hash_many(tags::BLOCK, &[]).is_empty());
    }

    #[test]
    fn padding_boundaries_every_length() {
        // Every message length 0..300 against prefixes that leave 0, 1, 33 and 63 bytes
        // in the first block, and prefixes of more than one block (shared midstate).
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for tag_len in [0usize, 30, 61, 62, 63, 64, 124, 125, 200] {
            let tag = vec![b't'; tag_len];
            let msgs: Vec<&[u8]> = (0..300).map(|l| &data[..l]).collect();
            check(&tag, &msgs);
        }
    }

    #[test]
    fn long_unequal_messages() {
        let data: Vec<u8> = (0..350_000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        let msgs: Vec<&[u8]> = vec![
            &data[..43_691],
            &data[1..100_001],
            &data[..5],
            &data[..349_526],
            &data[7..43_698],
            &data[..64],
            &data[..99_999],
        ];
        check(tags::BLOCK, &msgs);
    }

    fn interesting_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..300,
            prop::sample::select(vec![55usize, 56, 63, 64, 119, 120, 127, 128]),
        ]
    }

    proptest! {
        #[test]
        fn matches_tagged_hash(
            tag in prop::collection::vec(any::<u8>(), 0..80),
            msgs in prop::collection::vec(
                interesting_len().prop_flat_map(|l| prop::collection::vec(any::<u8>(), l)),
                0..9,
            ),
        ) {
            let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
            let want = reference(&tag, &refs);
            let prefix = netstring::netstring(&tag);
            for e in engines() {
                prop_assert_eq!(sha256d_many_with(e, &prefix, &refs), want.clone());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Batches wide enough for the sixteen-lane engine, with lengths far apart so that
        /// lanes finish at different steps and take the next message, then hand the last few
        /// to the narrow engine.
        #[test]
        fn wide_batches_match_tagged_hash(
            tag in prop::collection::vec(any::<u8>(), 0..80),
            lens in prop::collection::vec(
                prop_oneof![0usize..200, 500usize..3000, prop::sample::select(vec![55usize, 64, 119, 4096])],
                0..50,
            ),
            seed in any::<u8>(),
        ) {
            let data: Vec<u8> = (0..4200u32).map(|i| (i as u8).wrapping_mul(seed | 1) ^ (i >> 5) as u8).collect();
            let refs: Vec<&[u8]> = lens.iter().enumerate().map(|(j, &l)| &data[j % 97..j % 97 + l]).collect();
            let want = reference(&tag, &refs);
            let prefix = netstring::netstring(&tag);
            for e in engines() {
                prop_assert_eq!(sha256d_many_with(e, &prefix, &refs), want.clone(), "{:?}", e);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Groups under different tags hashed in one set of lanes give each group's own
        /// tagged hashes, whatever the group sizes (empty groups included) and lengths.
        #[test]
        fn groups_match_tagged_hash_per_group(
            groups in prop::collection::vec(
                (
                    prop::collection::vec(any::<u8>(), 0..80),
                    prop::collection::vec(
                        prop_oneof![0usize..200, 500usize..3000, prop::sample::select(vec![55usize, 64, 119, 4096])],
                        0..20,
                    ),
                ),
                0..4,
            ),
            seed in any::<u8>(),
        ) {
            let data: Vec<u8> = (0..4200u32).map(|i| (i as u8).wrapping_mul(seed | 1) ^ (i >> 5) as u8).collect();
            let msgs: Vec<Vec<&[u8]>> = groups
                .iter()
                .enumerate()
                .map(|(g, (_, lens))| {
                    lens.iter().enumerate().map(|(j, &l)| &data[(j + g) % 97..(j + g) % 97 + l]).collect()
                })
                .collect();
            let want: Vec<Vec<Hash>> = groups.iter().zip(&msgs).map(|((tag, _), m)| reference(tag, m)).collect();
            let prefixes: Vec<Vec<u8>> = groups.iter().map(|(tag, _)| netstring::netstring(tag)).collect();
            let input: Vec<(&[u8], &[&[u8]])> = prefixes.iter().zip(&msgs).map(|(p, m)| (p.as_slice(), m.as_slice())).collect();
            for e in engines() {
                prop_assert_eq!(sha256d_groups_with(e, &input), want.clone(), "{:?}", e);
            }
            let tagged: Vec<(&[u8], &[&[u8]])> = groups.iter().zip(&msgs).map(|((t, _), m)| (t.as_slice(), m.as_slice())).collect();
            prop_assert_eq!(tagged_hash_groups(&tagged), want);
        }
    }

    #[test]
    fn outer_many_every_batch_size() {
        // 0..40 digests: full wide chunks, a narrow remainder, and every remainder length.
        let inner: Vec<Hash> = (0..40u8).map(|i| [i.wrapping_mul(37); 32]).collect();
        for n in 0..inner.len() {
            let want: Vec<Hash> = inner[..n].iter().map(|h| sha256_ref(h)).collect();
            for e in engines() {
                assert_eq!(outer_many(e, &inner[..n]), want, "{e:?}, {n} digests");
            }
        }
    }

    /// SHA-256 computed by the `sha2` crate (an independent implementation).
    fn sha256_ref(data: &[u8]) -> Hash {
        use sha2::Digest;
        sha2::Sha256::digest(data).into()
    }

    #[test]
    fn stream_known_answers() {
        // FIPS 180-4 examples: SHA-256("abc") and the 448-bit two-block message.
        let hex = |h: Hash| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut s = Sha256Stream::new();
        s.update(b"ab");
        s.update(b"c");
        assert_eq!(
            hex(s.finalize_sha256()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut s = Sha256Stream::new();
        s.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
        assert_eq!(
            hex(s.finalize_sha256()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(Sha256Stream::new().finalize_sha256()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn tagged_stream_is_tagged_hash() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31) as u8).collect();
        for tag in [tags::CRYPTTEXT, tags::CRYPTTEXT_SEGMENT, tags::BLOCK] {
            let mut s = Sha256Stream::tagged(tag);
            s.update(&data[..77]);
            s.update(&data[77..]);
            assert_eq!(s.finalize_sha256d(), tagged_hash(tag, &data));
        }
    }

    proptest! {
        /// Several streams, each fed a sequence of pieces (each round feeds one piece into every
        /// stream at once, as the encoder does), against one-shot SHA-256 of the concatenation.
        #[test]
        fn update_many_matches_sha256(
            streams in prop::collection::vec(
                prop::collection::vec(
                    prop_oneof![0usize..200, 60usize..70, 1000usize..3000],
                    0..6,
                ),
                1..24,
            ),
            seed in any::<u8>(),
        ) {
            let data: Vec<u8> = (0..20_000u32).map(|i| (i as u8).wrapping_mul(seed | 1) ^ (i >> 7) as u8).collect();
            for e in engines() {
                let mut st: Vec<Sha256Stream> = vec![Sha256Stream::new(); streams.len()];
                let mut fed: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
                let rounds = streams.iter().map(Vec::len).max().unwrap_or(0);
                for r in 0..rounds {
                    let mut refs: Vec<&mut Sha256Stream> = st.iter_mut().collect();
                    let pieces: Vec<&[u8]> = streams
                        .iter()
                        .enumerate()
                        .map(|(j, lens)| {
                            let len = lens.get(r).copied().unwrap_or(0);
                            let start = (r * 997 + j * 131) % 7000;
                            &data[start..start + len]
                        })
                        .collect();
                    for (f, p) in fed.iter_mut().zip(&pieces) {
                        f.extend_from_slice(p);
                    }
                    update_many_with(e, &mut refs, &pieces);
                }
                for (s, f) in st.iter().zip(&fed) {
                    prop_assert_eq!(s.finalize_sha256(), sha256_ref(f), "{:?}", e);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn matches_tagged_hash_long(
            seed in any::<u8>(),
            lens in prop::collection::vec(90_000usize..110_000, 1..5),
        ) {
            let data: Vec<u8> = (0..110_000u32).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            let refs: Vec<&[u8]> = lens.iter().map(|&l| &data[..l]).collect();
            let want = reference(tags::BLOCK, &refs);
            let prefix = netstring::netstring(tags::BLOCK);
            for e in engines() {
                prop_assert_eq!(sha256d_many_with(e, &prefix, &refs), want.clone());
            }
        }
    }
}
