//! Fuzz target: directory bodies are untrusted (anyone holding a read cap can read them, and a
//! writer may be hostile). Unpacking arbitrary bytes, with and without the writekey and as an
//! immutable directory, must never panic; whatever unpacks must pack again without panicking, and
//! a writeable parse must re-pack to exactly the bytes it came from when the input was canonical.
#![no_main]

use lafs::dirnode::{DirKind, Directory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let writekey = [0x42u8; 16];
    for kind in [
        DirKind::Mutable {
            writekey: Some(writekey),
        },
        DirKind::Mutable { writekey: None },
        DirKind::Immutable,
    ] {
        if let Ok(dir) = Directory::unpack(kind, data) {
            let packed = dir.pack();
            if kind.writekey().is_some() || !kind.is_mutable() {
                let packed = packed.expect("a writeable or immutable parse re-packs");
                // Re-parsing the re-packed body is a fixed point.
                let again = Directory::unpack(kind, &packed).expect("re-packed body parses");
                assert_eq!(again.pack().expect("packs"), packed);
            }
            for (name, child) in dir.iter() {
                let _ = (name.len(), child.rw_uri(), child.ro_uri(), child.metadata.to_json());
            }
        }
    }
});
