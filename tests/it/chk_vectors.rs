//! All 120 `kind: chk` vectors of Tahoe 1.20's `test_vectors.yaml` (digest §9): the plaintext is
//! regenerated from its seed, encoded with the vector's convergence secret, k/N and max segment
//! size, and the cap string must equal the one Tahoe produced.
//!
//! The vectors live outside the repository: `$LAFS_VECTORS_DIR`, default
//! `$CARGO_MANIFEST_DIR/../shared/vectors`. When absent the test says so and passes, except
//! under `CI=true`, where absence fails. Run with `cargo test --profile ci --test it chk_vectors`.

use base64::Engine;
use lafs::immutable::{encode_bytes, EncodingParams, KeySource};
use rayon::prelude::*;
use std::path::PathBuf;

fn vectors_file() -> Option<String> {
    let dir = std::env::var_os("LAFS_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    let path = dir.join("tahoe-1.20-test_vectors.yaml");
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but the vectors are missing at {}: {e}",
                path.display()
            );
            eprintln!(
                "SKIPPING: test vectors not found at {} ({e}); set LAFS_VECTORS_DIR",
                path.display()
            );
            None
        }
    }
}

struct Vector {
    convergence: Vec<u8>,
    expected: String,
    length: usize,
    seed: Vec<u8>,
    k: usize,
    n: usize,
    segment_size: u64,
}

fn load() -> Option<Vec<Vector>> {
    let text = vectors_file()?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("vectors parse as YAML");
    let b64 = |v: &serde_yaml::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 string"))
            .expect("valid base64")
    };
    let int = |v: &serde_yaml::Value| v.as_u64().expect("integer");
    let vectors: Vec<Vector> = doc["vector"]
        .as_sequence()
        .expect("a `vector` list")
        .iter()
        .filter(|v| v["format"]["kind"].as_str() == Some("chk"))
        .map(|v| Vector {
            convergence: b64(&v["convergence"]),
            expected: v["expected"].as_str().expect("expected cap").to_string(),
            length: int(&v["sample"]["length"]) as usize,
            seed: b64(&v["sample"]["seed"]),
            k: int(&v["zfec"]["required"]) as usize,
            n: int(&v["zfec"]["total"]) as usize,
            segment_size: int(&v["zfec"]["segmentSize"]),
        })
        .collect();
    Some(vectors)
}

/// `(seed * (length // len(seed) + 1))[:length]`.
fn plaintext(seed: &[u8], length: usize) -> Vec<u8> {
    seed.iter().copied().cycle().take(length).collect()
}

#[test]
fn all_chk_vectors_reproduce() {
    let _heavy = crate::common::heavy();
    let Some(vectors) = load() else { return };
    assert_eq!(vectors.len(), 120, "the file holds 120 CHK vectors");
    let failures: Vec<String> = vectors
        .par_iter()
        .filter_map(|v| {
            let data = plaintext(&v.seed, v.length);
            let params = EncodingParams {
                needed: v.k,
                happy: v.n,
                total: v.n,
                max_segment_size: v.segment_size,
            };
            let f = encode_bytes(
                &data,
                &params,
                &KeySource::Convergent(v.convergence.clone()),
            )
            .expect("encoding succeeds");
            let got = f.cap.to_string();
            (got != v.expected).then(|| {
                format!(
                    "size {} k {} n {}: got {got}, want {}",
                    v.length, v.k, v.n, v.expected
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
