//! `lafs debug encode` end to end: the built binary must print Tahoe's cap for vector inputs and
//! fail (non-zero exit, message on stderr) on bad arguments.

use std::io::Write;
use std::process::{Command, Output};

fn lafs(args: &[&str], content: &[u8]) -> Output {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content).unwrap();
    f.flush().unwrap();
    Command::new(env!("CARGO_BIN_EXE_lafs"))
        .args(["debug", "encode"])
        .args(args)
        .arg(f.path())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Digest §2 worked example (also the vectors' 56-byte, 3-of-10 case).
#[test]
fn vector_56_bytes_3_of_10() {
    let o = lafs(
        &[
            "--convergence-base64",
            "YWFhYWFhYWFhYWFhYWFhYQ==",
            "--needed",
            "3",
            "--total",
            "10",
            "--max-segment-size",
            "131072",
        ],
        &[b'a'; 56],
    );
    assert_eq!(
        stdout(&o),
        "URI:CHK:hah7mxwfpqemm7icdh3hwsa5fa:6epvxt2uxh42obpnfn4wkrplqml7voh7aqpnqnapu7ffcyn2hk3q:3:10:56\n"
    );
}

/// The same secret given as base32 (b32 of "aaaaaaaaaaaaaaaa" is "mfqwcylbmfqwcylbmfqwcylbme")
/// gives the same cap; whitespace around it (as in a file) is trimmed.
#[test]
fn base32_secret() {
    let o = lafs(
        &[
            "--convergence",
            " mfqwcylbmfqwcylbmfqwcylbme\n",
            "--needed",
            "3",
            "--total",
            "10",
            "--max-segment-size",
            "131072",
        ],
        &[b'a'; 56],
    );
    assert_eq!(
        stdout(&o),
        "URI:CHK:hah7mxwfpqemm7icdh3hwsa5fa:6epvxt2uxh42obpnfn4wkrplqml7voh7aqpnqnapu7ffcyn2hk3q:3:10:56\n"
    );
}

#[test]
fn lit_for_small_files() {
    // "hello" in base32 is nbswy3dp.
    let o = lafs(
        &["--convergence-base64", "YWFhYWFhYWFhYWFhYWFhYQ=="],
        b"hello",
    );
    assert_eq!(stdout(&o), "URI:LIT:nbswy3dp\n");
}

#[test]
fn errors_exit_non_zero() {
    let both = lafs(
        &[
            "--convergence",
            "mfqwcylbmfqwcylbmfqwcylbme",
            "--convergence-base64",
            "YQ==",
        ],
        b"x",
    );
    let none = lafs(&[], b"x");
    let bad_b32 = lafs(&["--convergence", "NOT-BASE32!"], b"x");
    let bad_b64 = lafs(&["--convergence-base64", "@@@"], b"x");
    let bad_k = lafs(
        &["--convergence-base64", "YQ==", "--needed", "11"],
        &[0; 100],
    );
    for o in [both, none, bad_b32, bad_b64, bad_k] {
        assert!(!o.status.success());
        assert!(o.stdout.is_empty());
        assert!(!o.stderr.is_empty());
    }
}
