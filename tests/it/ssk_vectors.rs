//! The 240 `kind: ssk` vectors (SDMF and MDMF) of Tahoe 1.20's `test_vectors.yaml`: the expected
//! cap depends only on the RSA key (digest §9), so each PKCS#1 PEM key is re-serialized to PKCS#8
//! DER (as Tahoe's `--private-key-path` loading does), the cap is derived, and its string must
//! equal the vector's `expected` exactly.

use lafs::cap::{MutableFormat, NodeCap};
use lafs::mutable::keys::SigningKeyPair;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use std::path::PathBuf;

fn vectors_file() -> Option<PathBuf> {
    let dir = std::env::var_os("LAFS_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    let f = dir.join("tahoe-1.20-test_vectors.yaml");
    if f.is_file() {
        Some(f)
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("test vectors not found at {} (CI=true)", f.display());
    } else {
        eprintln!(
            "SKIPPED: Tahoe test vectors not found at {}; set LAFS_VECTORS_DIR",
            f.display()
        );
        None
    }
}

#[test]
fn ssk_caps_match_tahoe() {
    let Some(path) = vectors_file() else { return };
    let text = std::fs::read_to_string(&path).expect("read vectors");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("parse vectors yaml");
    let vectors = doc["vector"].as_sequence().expect("vector list");
    let mut counts = [0usize; 2];
    for v in vectors {
        if v["format"]["kind"].as_str() != Some("ssk") {
            continue;
        }
        let params = &v["format"]["params"];
        let format = match params["format"].as_str() {
            Some("sdmf") => MutableFormat::Sdmf,
            Some("mdmf") => MutableFormat::Mdmf,
            other => panic!("unknown ssk format {other:?}"),
        };
        let pem = params["key"].as_str().expect("key pem");
        let der = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
            .expect("PKCS#1 PEM")
            .to_pkcs8_der()
            .expect("PKCS#8")
            .as_bytes()
            .to_vec();
        let pair = SigningKeyPair::from_pkcs8_der(der).expect("2048-bit key");
        let cap = NodeCap::MutableWrite(pair.file_keys().write_cap(format));
        let expected = v["expected"].as_str().expect("expected cap");
        assert_eq!(cap.to_string(), expected);
        counts[format as usize] += 1;
    }
    assert_eq!(counts, [120, 120], "expected 120 SDMF and 120 MDMF vectors");
}
