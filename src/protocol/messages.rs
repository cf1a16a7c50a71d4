//! CBOR request and response bodies of the HTTPS storage protocol (digest §6.3), with strict
//! encoding and decoding that follow Tahoe 1.20's CDDL schemas.
//!
//! Design: every message decodes from a `ciborium::Value` tree with hand-written checks instead
//! of serde derives, because the schemas need things serde cannot express: tag 258 around sets,
//! a byte-string-keyed version map, integer-keyed maps, and **strict** maps (pycddl rejects extra
//! keys, so we reject extra, missing and duplicate keys as well).
//!
//! Invariants:
//! - Decoding never panics and allocates at most a small multiple of the input size: bodies are
//!   checked against a size limit before decoding, ciborium never preallocates from declared
//!   lengths, and nesting is limited ([`MAX_DEPTH`]).
//! - Exactly one CBOR item per body; trailing bytes are an error.
//! - Share numbers are `0..=255` (a Tahoe share number always fits one byte; CHK allows N = 256).
//!   This is stricter than the CDDL `uint` and only rejects values no Tahoe node produces.
//! - Errors name the field that failed, never its contents (a body may carry share data).
//! - Encoding emits keys in the order the Python client/server emit them, definite lengths and
//!   minimal integers (as cbor2 does), so our bytes match Python's for the same message.

use std::collections::{BTreeMap, BTreeSet};

use ciborium::value::{Integer, Value};

/// The CBOR media type, the only one the protocol speaks.
pub const CBOR_MIME: &str = "application/cbor";

/// The CBOR tag for a mathematical finite set (IANA), used for every set in the protocol.
pub const SET_TAG: u64 = 258;

/// The version-map key of the storage protocol v1 parameters.
pub const STORAGE_V1: &[u8] = b"http://allmydata.org/tahoe/protocols/storage/v1";

/// Body limit of `POST /immutable/:si` (Tahoe 1.20).
pub const ALLOCATE_MAX_BODY: usize = 8192;
/// Body limit of the `corrupt` endpoints (Tahoe 1.20).
pub const CORRUPT_MAX_BODY: usize = 32768;
/// Tahoe's default CBOR request body limit (1 MiB).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// The Python client's limit on a CBOR response body (30 MiB).
pub const MAX_CBOR_RESPONSE: usize = 30 * 1024 * 1024;
/// The largest allowed `reason` of a corruption advisory, in UTF-8 bytes.
pub const MAX_REASON_BYTES: usize = 32765;
/// Most share numbers in one set or map (`0*256`).
pub const MAX_SHARES: usize = 256;
/// Most test vectors per share and most read vectors (`0*30`).
pub const MAX_VECTORS: usize = 30;
/// CBOR nesting depth limit; the deepest message (read-test-write) nests 6 levels.
pub const MAX_DEPTH: usize = 16;

/// A share number.
pub type ShareNum = u8;

/// Why a body was not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body is larger than the endpoint allows.
    #[error("message body of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not a single well-formed CBOR item.
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    /// The CBOR item does not follow the message schema.
    #[error("schema violation in {context}: {problem}")]
    Schema {
        /// Where (message and field name).
        context: &'static str,
        /// What was wrong.
        problem: &'static str,
    },
}

fn schema(context: &'static str, problem: &'static str) -> MessageError {
    MessageError::Schema { context, problem }
}

/// Decodes exactly one CBOR item from `body`, enforcing `limit` and the depth limit.
pub fn decode_value(body: &[u8], limit: usize) -> Result<Value, MessageError> {
    if body.len() > limit {
        return Err(MessageError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    let mut reader = body;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_DEPTH)
        .map_err(|e| MessageError::Cbor(cbor_error_kind(&e).to_string()))?;
    if !reader.is_empty() {
        return Err(MessageError::Cbor(
            "trailing bytes after the CBOR item".into(),
        ));
    }
    Ok(value)
}

/// A content-free description of a ciborium error (its Display may quote input text).
fn cbor_error_kind<T>(e: &ciborium::de::Error<T>) -> &'static str {
    match e {
        ciborium::de::Error::Io(_) => "truncated input",
        ciborium::de::Error::Syntax(_) => "syntax error",
        ciborium::de::Error::Semantic(_, _) => "semantic error",
        ciborium::de::Error::RecursionLimitExceeded => "nesting too deep",
    }
}

/// Encodes a value tree. Writing into a `Vec` cannot fail for the trees we build.
pub fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // ciborium only fails on writer errors, which a Vec never returns.
    let _ = ciborium::ser::into_writer(value, &mut out);
    out
}

// ----- value helpers -------------------------------------------------------------------------

fn uint(v: u64) -> Value {
    Value::Integer(Integer::from(v))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn set_of(nums: &BTreeSet<ShareNum>) -> Value {
    Value::Tag(
        SET_TAG,
        Box::new(Value::Array(
            nums.iter().map(|n| uint(u64::from(*n))).collect(),
        )),
    )
}

fn as_u64(v: &Value, ctx: &'static str) -> Result<u64, MessageError> {
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| schema(ctx, "not an unsigned integer")),
        _ => Err(schema(ctx, "not an unsigned integer")),
    }
}

fn as_share_num(v: &Value, ctx: &'static str) -> Result<ShareNum, MessageError> {
    ShareNum::try_from(as_u64(v, ctx)?).map_err(|_| schema(ctx, "share number above 255"))
}

fn as_bytes(v: Value, ctx: &'static str) -> Result<Vec<u8>, MessageError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(schema(ctx, "not a byte string")),
    }
}

fn as_array(v: Value, ctx: &'static str) -> Result<Vec<Value>, MessageError> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(schema(ctx, "not an array")),
    }
}

fn as_map(v: Value, ctx: &'static str) -> Result<Vec<(Value, Value)>, MessageError> {
    match v {
        Value::Map(m) => Ok(m),
        _ => Err(schema(ctx, "not a map")),
    }
}

/// Decodes `#6.258([* uint])` into a set of share numbers (at most 256; duplicates rejected).
fn as_share_set(v: Value, ctx: &'static str) -> Result<BTreeSet<ShareNum>, MessageError> {
    let inner = match v {
        Value::Tag(SET_TAG, inner) => *inner,
        _ => return Err(schema(ctx, "not a tag-258 set")),
    };
    let items = as_array(inner, ctx)?;
    if items.len() > MAX_SHARES {
        return Err(schema(ctx, "more than 256 share numbers"));
    }
    let mut set = BTreeSet::new();
    for item in &items {
        if !set.insert(as_share_num(item, ctx)?) {
            return Err(schema(ctx, "duplicate set element"));
        }
    }
    Ok(set)
}

/// The key of a strict map: text (tstr) or bytes (bstr), as the schema says.
#[derive(Clone, Copy)]
enum KeyKind {
    Text,
    Bytes,
}

/// Splits a strict map into the values of exactly `keys`, in that order. Extra, missing,
/// duplicate or wrongly-typed keys are errors.
fn strict_map<const N: usize>(
    v: Value,
    kind: KeyKind,
    keys: [&'static str; N],
    ctx: &'static str,
) -> Result<[Value; N], MessageError> {
    let entries = as_map(v, ctx)?;
    let mut out: [Option<Value>; N] = std::array::from_fn(|_| None);
    for (k, val) in entries {
        let name: &[u8] = match (&k, kind) {
            (Value::Text(t), KeyKind::Text) => t.as_bytes(),
            (Value::Bytes(b), KeyKind::Bytes) => b.as_slice(),
            _ => return Err(schema(ctx, "map key of the wrong type")),
        };
        let idx = keys
            .iter()
            .position(|key| key.as_bytes() == name)
            .ok_or(schema(ctx, "unexpected map key"))?;
        let slot = out.get_mut(idx).ok_or(schema(ctx, "unexpected map key"))?;
        if slot.replace(val).is_some() {
            return Err(schema(ctx, "duplicate map key"));
        }
    }
    let mut result: [Value; N] = std::array::from_fn(|_| Value::Null);
    for (dst, src) in result.iter_mut().zip(out) {
        *dst = src.ok_or(schema(ctx, "missing map key"))?;
    }
    Ok(result)
}

fn text_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

// ----- messages ------------------------------------------------------------------------------

/// `GET /storage/v1/version` response (byte-string keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Largest immutable share the server accepts (Python: free space).
    pub maximum_immutable_share_size: u64,
    /// Largest mutable share (Python: 69105×10¹²).
    pub maximum_mutable_share_size: u64,
    /// Free space for shares.
    pub available_space: u64,
    /// e.g. `tahoe-lafs/1.20.0`.
    pub application_version: Vec<u8>,
}

impl VersionInfo {
    /// Encodes in Python's key order.
    pub fn to_cbor(&self) -> Vec<u8> {
        let bkey = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        let v1 = Value::Map(vec![
            (
                bkey("maximum-immutable-share-size"),
                uint(self.maximum_immutable_share_size),
            ),
            (
                bkey("maximum-mutable-share-size"),
                uint(self.maximum_mutable_share_size),
            ),
            (bkey("available-space"), uint(self.available_space)),
        ]);
        encode_value(&Value::Map(vec![
            (Value::Bytes(STORAGE_V1.to_vec()), v1),
            (
                bkey("application-version"),
                Value::Bytes(self.application_version.clone()),
            ),
        ]))
    }

    /// Decodes strictly (the Python client rejects text keys and extra keys).
    pub fn from_cbor(body: &[u8]) -> Result<Self, MessageError> {
        const CTX: &str = "version";
        let v = decode_value(body, MAX_CBOR_RESPONSE)?;
        let v1_key = "http://allmydata.org/tahoe/protocols/storage/v1";
        let [v1, app] = strict_map(v, KeyKind::Bytes, [v1_key, "application-version"], CTX)?;
        let [imm, mu, avail] = strict_map(
            v1,
            KeyKind::Bytes,
            [
                "maximum-immutable-share-size",
                "maximum-mutable-share-size",
                "available-space",
            ],
            CTX,
        )?;
        Ok(VersionInfo {
            maximum_immutable_share_size: as_u64(&imm, CTX)?,
            maximum_mutable_share_size: as_u64(&mu, CTX)?,
            available_space: as_u64(&avail, CTX)?,
            application_version: as_bytes(app, CTX)?,
        })
    }
}

/// `POST /storage/v1/immutable/:si` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateRequest {
    /// Shares to allocate.
    pub share_numbers: BTreeSet<ShareNum>,
    /// Size of each share.
    pub allocated_size: u64,
}

impl AllocateRequest {
    /// Encodes as the Python client does.
    pub fn to_cbor(&self) -> Vec<u8> {
        encode_value(&text_map(vec![
            ("share-numbers", set_of(&self.share_numbers)),
            ("allocated-size", uint(self.allocated_size)),
        ]))
    }

    /// Decodes strictly, within [`ALLOCATE_MAX_BODY`].
    pub fn from_cbor(body: &[u8]) -> Result<Self, MessageError> {
        const CTX: &str = "allocate request";
        let v = decode_value(body, ALLOCATE_MAX_BODY)?;
        let [nums, size] = strict_map(v, KeyKind::Text, ["share-numbers", "allocated-size"], CTX)?;
        Ok(AllocateRequest {
            share_numbers: as_share_set(nums, CTX)?,
            allocated_size: as_u64(&size, CTX)?,
        })
    }
}

/// `POST /storage/v1/immutable/:si` response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocateResponse {
    /// Complete shares the server already holds for the SI.
    pub already_have: BTreeSet<ShareNum>,
    /// Shares newly allocated to this upload.
    pub allocated: BTreeSet<ShareNum>,
}

impl AllocateResponse {
    /// Encodes in Python's key order.
    pub fn to_cbor(&self) -> Vec<u8> {
        encode_value(&text_map(vec![
            ("already-have", set_of(&self.already_have)),
            ("allocated", set_of(&self.allocated)),
        ]))
    }

    /// Decodes strictly.
    pub fn from_cbor(body: &[u8]) -> Result<Self, MessageError> {
        const CTX: &str = "allocate response";
        let v = decode_value(body, MAX_CBOR_RESPONSE)?;
        let [have, alloc] = strict_map(v, KeyKind::Text, ["already-have", "allocated"], CTX)?;
        Ok(AllocateResponse {
            already_have: as_share_set(have, CTX)?,
            allocated: as_share_set(alloc, CTX)?,
        })
    }
}

/// A half-open byte range `[begin, end)` still required by an immutable upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequiredRange {
    /// First byte.
    pub begin: u64,
    /// One past the last byte.
    pub end: u64,
}

/// `PATCH /storage/v1/immutable/:si/:shnum` response (200 or 201).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteResponse {
    /// Ranges not yet written (empty when the share is complete).
    pub required: Vec<RequiredRange>,
}

impl WriteResponse {
    /// Encodes as Python does.
    pub fn to_cbor(&self) -> Vec<u8> {
        let ranges = self
            .required
            .iter()
            .map(|r| text_map(vec![("begin", uint(r.begin)), ("end", uint(r.end))]))
            .collect();
        encode_value(&text_map(vec![("required", Value::Array(ranges))]))
    }

    /// Decodes strictly.
    pub fn from_cbor(body: &[u8]) -> Result<Self, MessageError> {
        const CTX: &str = "write response";
        let v = decode_value(body, MAX_CBOR_RESPONSE)?;
        let [req] = strict_map(v, KeyKind::Text, ["required"], CTX)?;
        let mut required = Vec::new();
        for item in as_array(req, CTX)? {
            let [b, e] = strict_map(item, KeyKind::Text, ["begin", "end"], CTX)?;
            required.push(RequiredRange {
                begin: as_u64(&b, CTX)?,
                end: as_u64(&e, CTX)?,
            });
        }
        Ok(WriteResponse { required })
    }
}

/// `GET /storage/v1/{immutable,mutable}/:si/shares` response: `#6.258([* uint])`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShareList(pub BTreeSet<ShareNum>);

impl ShareList {
    /// Encodes the tag-258 set.
    pub fn to_cbor(&self) -> Vec<u8> {
        encode_value(&set_of(&self.0))
    }

    /// Decodes strictly.
    pub fn from_cbor(body: &[u8]) -> Result<Self, MessageError> {
        let v = decode_value(body, MAX_CBOR_RESPONSE)?;
        Ok(ShareList(as_share_set(v, "share list")?))
    }
}

/// `POST .../:shnum/corrupt` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRequest {
    /// Human-readable reason, 1..=32765 UTF-8 bytes.
    pub reason: String,
}

impl CorruptRequest {
    /// Encodes; the caller keeps the reason within limits (checked by [`Self::validate`]).
    pub fn to_cbor(&self) -> Vec<u8> {
        encode_value(&text_map(vec![("reason", text(&self.reason))]))
    }

    /// Checks the `.size (1..32765)` constraint.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.reason.is_empty() || self.reason.len() > MAX_REASON_BYTES {
            return Err(schema("corrupt request", "reason must be 1..=32765 bytes"));
        }
        Ok(())
    }

    /// Decodes strictly, within [`CORRUPT_MAX_BODY`].
    pub fn from_cbor(body: &[u8]) -> Result<Self, MessageError> {
        const CTX: &str = "corrupt request";
        let v = decode_value(body, CORRUPT_MAX_BODY)?;
        let [reason] = strict_map(v, KeyKind::Text, ["reason"], CTX)?;
        let reason = match reason {
            Value::Text(t) => t,
            _ => return Err(schema(CTX, "reason is not text")),
        };
        let req = CorruptRequest { reason };
        req.validate()?;
        Ok(req)
    }
}

/// One equality test of a read-test-write: the bytes at `[offset, offset+size)` must equal
/// `specimen` (a missing share reads as empty).
#[derive(Clone, PartialEq, Eq)]
pub struct TestVector {
    /// Offset in the share data.
    pub offset: u64,
    /// Length to compare.
    pub size: u64,
    /// Expected bytes.
    pub specimen: Vec<u8>,
}

/// One write of a read-test-write.
#[derive(Clone, PartialEq, Eq)]
pub struct WriteVector {
    /// Offset in the share data.
    pub offset: u64,
    /// Bytes to write.
    pub data: Vec<u8>,
}

/// Share contents are not printed: they may be large, and callers may log errors with them.
impl std::fmt::Debug for TestVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TestVector({}+{}, {} B)",
            self.offset,
            self.size,
            self.specimen.len()
        )
    }
}

impl std::fmt::Debug for WriteVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteVector({}, {} B)", self.offset, self.data.len())
    }
}

/// A read of `[offset, offset+size)` from every share of the SI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadVector {
    /// Offset in the share data.
    pub offset: u64,
    /// Length.
    pub size: u64,
}

/// The tests, writes and new length for one share.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestWriteVectors {
    /// Equality tests (at most 30).
    pub test: Vec<TestVector>,
    /// Writes applied if every test of every share passes.
    pub write: Vec<WriteVector>,
    /// Truncate/extend to this length (`0` deletes the share), or `None`.
    pub new_length: Option<u64>,
}

/// `POST /storage/v1/mutable/:si/read-test-write` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadTestWriteRequest {
    /// Per-share tests and writes (at most 256 shares).
    pub test_write_vectors: BTreeMap<ShareNum, TestWriteVectors>,
    /// Reads done before any write (at most 30).
    pub read_vector: Vec<ReadVector>,
}

impl ReadTestWriteRequest {
    /// Encodes as the Python client does.
    pub fn to_cbor(&self) -> Vec<u8> {
        let twv = self
            .test_write_vectors
            .iter()
            .map(|(sh, v)| {
                let tests = v
                    .test
                    .iter()
                    .map(|t| {
                        text_map(vec![
                            ("offset", uint(t.offset)),
                            ("size", uint(t.size)),
                            ("specimen", Value::Bytes(t.specimen.clone())),
                        ])
                    })
                    .collect();
                let writes = v
                    .write
                    .iter()
                    .map(|w| {
                        text_map(vec![
                            ("offset", uint(w.offset)),
                            ("data", Value::Bytes(w.data.clone())),
                        ])
                    })
                    .collect();
                let body = text_map(vec![
                    ("test", Value::Array(tests)),
                    ("write", Value::Array(writes)),
                    ("new-length", v.new_length.map_or(Value::Null, uint)),
                ]);
                (uint(u64::from(*sh)), body)
            })
            .collect();
        let reads = self
            .read_vector
            .iter()
            .map(|r| text_map(vec![("offset", uint(r.offset)), ("size", uint(r.size))]))
            .collect();
        encode_value(&text_map(vec![
            ("test-write-vectors", Value::Map(twv)),
            ("read-vector", Value::Array(reads)),
        ]))
    }

    /// Decodes strictly, within `limit` bytes (the server's configured limit).
    pub fn from_cbor(body: &[u8], limit: usize) -> Result<Self, MessageError> {
        const CTX: &str = "read-test-write request";
        let v = decode_value(body, limit)?;
        let [twv, reads] =
            strict_map(v, KeyKind::Text, ["test-write-vectors", "read-vector"], CTX)?;
        let entries = as_map(twv, CTX)?;
        if entries.len() > MAX_SHARES {
            return Err(schema(CTX, "more than 256 shares"));
        }
        let mut test_write_vectors = BTreeMap::new();
        for (k, val) in entries {
            let sh = as_share_num(&k, CTX)?;
            let [t, w, nl] = strict_map(val, KeyKind::Text, ["test", "write", "new-length"], CTX)?;
            let tests = as_array(t, CTX)?;
            if tests.len() > MAX_VECTORS {
                return Err(schema(CTX, "more than 30 test vectors"));
            }
            let mut test = Vec::with_capacity(tests.len());
            for item in tests {
                let [o, s, sp] =
                    strict_map(item, KeyKind::Text, ["offset", "size", "specimen"], CTX)?;
                test.push(TestVector {
                    offset: as_u64(&o, CTX)?,
                    size: as_u64(&s, CTX)?,
                    specimen: as_bytes(sp, CTX)?,
                });
            }
            let mut write = Vec::new();
            for item in as_array(w, CTX)? {
                let [o, d] = strict_map(item, KeyKind::Text, ["offset", "data"], CTX)?;
                write.push(WriteVector {
                    offset: as_u64(&o, CTX)?,
                    data: as_bytes(d, CTX)?,
                });
            }
            let new_length = match nl {
                Value::Null => None,
                other => Some(as_u64(&other, CTX)?),
            };
            let twv = TestWriteVectors {
                test,
                write,
                new_length,
            };
            if test_write_vectors.insert(sh, twv).is_some() {
                return Err(schema(CTX, "duplicate share number"));
            }
        }
        let reads = as_array(reads, CTX)?;
        if reads.len() > MAX_VECTORS {
            return Err(schema(CTX, "more than 30 read vectors"));
        }
        let mut read_vector = Vec::with_capacity(reads.len());
        for item in reads {
            let [o, s] = strict_map(item, KeyKind::Text, ["offset", "size"], CTX)?;
            read_vector.push(ReadVector {
                offset: as_u64(&o, CTX)?,
                size: as_u64(&s, CTX)?,
            });
        }
        Ok(ReadTestWriteRequest {
            test_write_vectors,
            read_vector,
        })
    }
}

/// `POST /storage/v1/mutable/:si/read-test-write` response.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ReadTestWriteResponse {
    /// Whether every test passed (and so the writes were applied).
    pub success: bool,
    /// For every existing share of the SI: the pre-write data of each read vector.
    pub data: BTreeMap<ShareNum, Vec<Vec<u8>>>,
}

impl std::fmt::Debug for ReadTestWriteResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTestWriteResponse")
            .field("success", &self.success)
            .field("shares", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ReadTestWriteResponse {
    /// Encodes as Python does.
    pub fn to_cbor(&self) -> Vec<u8> {
        let data = self
            .data
            .iter()
            .map(|(sh, reads)| {
                (
                    uint(u64::from(*sh)),
                    Value::Array(reads.iter().map(|r| Value::Bytes(r.clone())).collect()),
                )
            })
            .collect();
        encode_value(&text_map(vec![
            ("success", Value::Bool(self.success)),
            ("data", Value::Map(data)),
        ]))
    }

    /// Decodes strictly.
    pub fn from_cbor(body: &[u8]) -> Result<Self, MessageError> {
        const CTX: &str = "read-test-write response";
        let v = decode_value(body, MAX_CBOR_RESPONSE)?;
        let [success, data] = strict_map(v, KeyKind::Text, ["success", "data"], CTX)?;
        let success = match success {
            Value::Bool(b) => b,
            _ => return Err(schema(CTX, "success is not a bool")),
        };
        let entries = as_map(data, CTX)?;
        if entries.len() > MAX_SHARES {
            return Err(schema(CTX, "more than 256 shares"));
        }
        let mut out = BTreeMap::new();
        for (k, val) in entries {
            let sh = as_share_num(&k, CTX)?;
            let reads = as_array(val, CTX)?
                .into_iter()
                .map(|r| as_bytes(r, CTX))
                .collect::<Result<Vec<_>, _>>()?;
            if out.insert(sh, reads).is_some() {
                return Err(schema(CTX, "duplicate share number"));
            }
        }
        Ok(ReadTestWriteResponse { success, data: out })
    }
}
