//! Fuzzes `tahoe.cfg` parsing: the configparser-compatible reader, interpolation, booleans and
//! the typed node configuration never panic.
#![no_main]

use lafs::config::{Ini, NodeConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ini) = Ini::parse_bytes(data) {
        for section in ini.sections() {
            for option in ini.options(section) {
                let _ = ini.get(section, option);
                let _ = ini.get_bool(section, option);
            }
        }
        let _ = NodeConfig::from_ini(ini);
    }
    let _ = NodeConfig::parse_bytes(data);
});
