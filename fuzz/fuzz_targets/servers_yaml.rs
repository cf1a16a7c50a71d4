//! Fuzzes `private/servers.yaml` parsing: any input parses or errors without panicking; every
//! usable entry yields a server description or a typed error, and what the writer emits parses
//! back to the same entries.
#![no_main]

use lafs::config::ServersYaml;
use lafs::grid::servers_from_yaml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = ServersYaml::parse_bytes(data) else {
        return;
    };
    let _ = servers_from_yaml(&yaml);
    if let Ok(text) = yaml.to_yaml_string() {
        let again = ServersYaml::parse(&text).expect("writer output parses");
        assert_eq!(again.storage, yaml.storage);
    }
});
