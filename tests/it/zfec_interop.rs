//! Byte-for-byte comparison with the real zfec (the Python `zfec` package Tahoe-LAFS uses).
//!
//! Random pieces are generated here, piped to a small inline Python script that encodes them with
//! `zfec.Encoder(k, m).encode(blocks)` and writes all m shares back; every share must equal ours,
//! for every kernel this CPU runs. Our decoder must also rebuild the data from zfec's shares.
//!
//! The Python interpreter is `$LAFS_TAHOE_VENV/bin/python`, by default the Tahoe venv under
//! `$HOME/.cache` (`lafs/tahoe-venv`, then `lafs-tahoe-venv`). When it or `zfec` is missing the
//! test prints why and passes, except with `CI=true`, where that is a failure.

use lafs::codec::{kernel, Codec};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"
import sys, zfec
k, m = int(sys.argv[1]), int(sys.argv[2])
data = sys.stdin.buffer.read()
bl = len(data) // k
blocks = [data[i * bl:(i + 1) * bl] for i in range(k)]
shares = zfec.Encoder(k, m).encode(blocks)
assert len(shares) == m
sys.stdout.buffer.write(b"".join(bytes(s) for s in shares))
"#;

fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("LAFS_TAHOE_VENV") {
        Some(v) => vec![PathBuf::from(v)],
        None => {
            let home = PathBuf::from(std::env::var_os("HOME")?);
            vec![
                home.join(".cache/lafs/tahoe-venv"),
                home.join(".cache/lafs-tahoe-venv"),
            ]
        }
    };
    candidates
        .into_iter()
        .map(|v| v.join("bin/python"))
        .find(|p| p.exists())
}

fn skip_or_fail(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("zfec interop test cannot run under CI: {why}");
    }
    eprintln!("SKIPPING zfec interop test: {why} (set LAFS_TAHOE_VENV to a venv with zfec)");
}

/// zfec's m shares of `pieces`, concatenated.
fn zfec_encode(py: &PathBuf, k: usize, m: usize, pieces: &[u8]) -> Vec<u8> {
    let mut child = Command::new(py)
        .args(["-c", SCRIPT, &k.to_string(), &m.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    // Write on a thread so a large output cannot deadlock against our input.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = pieces.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("python output");
    writer.join().expect("writer thread").expect("write stdin");
    assert!(out.status.success(), "zfec script failed for {k}-of-{m}");
    out.stdout
}

#[test]
fn shares_match_python_zfec() {
    let _heavy = crate::common::heavy();
    let Some(py) = python() else {
        return skip_or_fail("no Tahoe venv python found");
    };
    let probe = Command::new(&py).args(["-c", "import zfec"]).output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        return skip_or_fail(&format!("{} cannot import zfec", py.display()));
    }

    let shapes = [
        (1, 1),
        (1, 3),
        (2, 3),
        (3, 10),
        (5, 7),
        (16, 32),
        (71, 255),
        (101, 256),
        (128, 256),
        (255, 256),
        (256, 256),
        (1, 256),
        (2, 256),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x2fec);
    for &(k, n) in &shapes {
        let codecs: Vec<(&str, Codec)> = kernel::available()
            .into_iter()
            .map(|(name, f)| (name, Codec::with_kernel(k, n, f).expect("valid k, n")))
            .collect();
        // Lengths below, at and above the vector widths, and one spanning several column chunks.
        let mut lengths = vec![1usize, 31, 33, 100];
        if k <= 5 {
            lengths.push(4097);
            lengths.push(43691);
        }
        for bl in lengths {
            let data: Vec<u8> = (0..k * bl).map(|_| rng.gen()).collect();
            let theirs = zfec_encode(&py, k, n, &data);
            assert_eq!(theirs.len(), n * bl, "zfec output size for {k}-of-{n}");
            let theirs: Vec<&[u8]> = theirs.chunks(bl).collect();
            let pieces: Vec<&[u8]> = data.chunks(bl).collect();
            for (name, codec) in &codecs {
                let mut parity = vec![vec![0u8; bl]; n - k];
                let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(|v| &mut v[..]).collect();
                codec.encode(&pieces, &mut outs).expect("encode");
                for (id, share) in pieces
                    .iter()
                    .copied()
                    .chain(parity.iter().map(|v| &v[..]))
                    .enumerate()
                {
                    assert!(
                        share == theirs[id],
                        "kernel {name}: {k}-of-{n}, block {bl} B: share {id} differs from zfec"
                    );
                }
            }
            // Our decoder on zfec's shares, from the last k (parity only when n - k >= k).
            let ids: Vec<usize> = (n - k..n).collect();
            let dec = codecs[codecs.len() - 1].1.decoder(&ids).expect("valid ids");
            let blocks: Vec<&[u8]> = ids.iter().map(|&i| theirs[i]).collect();
            let mut out = vec![vec![0u8; bl]; k];
            let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|v| &mut v[..]).collect();
            dec.decode(&blocks, &mut outs).expect("decode");
            assert!(out.concat() == data, "{k}-of-{n}: decode of zfec shares");
        }
    }
}
