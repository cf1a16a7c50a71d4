"""Writes NODEDIR/private/servers.yaml from a Tahoe client's introducer cache.

A Tahoe client learns its storage servers from the introducer and caches their announcements in
private/introducer_*_cache.yaml. lafs has no introducer client, so the benchmarks give it the
same announcements as a static servers.yaml (a running Tahoe client does not re-read it).

usage: python3 servers_yaml_from_cache.py PRIVATE_DIR MIN_SERVERS   (needs PyYAML: the Tahoe venv)
"""
import glob
import os
import sys

import yaml


def main():
    priv, want = sys.argv[1], int(sys.argv[2])
    storage = {}
    for path in glob.glob(os.path.join(priv, "introducer_*_cache.yaml")):
        for entry in yaml.safe_load(open(path)) or []:
            ann = entry.get("ann") or {}
            if ann.get("service-name") == "storage":
                storage[entry["key_s"]] = {"ann": ann}
    if len(storage) < want:
        sys.exit("only %d storage announcements cached, want %d" % (len(storage), want))
    with open(os.path.join(priv, "servers.yaml"), "w") as f:
        yaml.safe_dump({"storage": storage}, f, default_flow_style=False)


if __name__ == "__main__":
    main()
