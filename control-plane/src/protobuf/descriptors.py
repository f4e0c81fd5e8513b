#!/usr/bin/env python3
"""Regenerates descriptors.txt from the k8s-pb crate source.

descriptors.txt lists every protobuf message of k8s-pb with its fields
(tag, prost field name, wire kind, message type), so that protobuf bodies can
be decoded without code per type. Run after bumping k8s-pb:

    python3 control-plane/src/protobuf/descriptors.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src \
        > control-plane/src/protobuf/descriptors.txt

Format: `message <package>.<Name>` lines, each followed by field lines
`<tag> <name> <label> <kind> [<message type>]`, label being `one`, `repeated`
or `map` (string keys), kind one of string int32 int64 bool bytes double
message. Alpha and beta versions are left out. Packages are written as k8s definition names (`io.k8s.api.core.v1`).
"""
import os
import re
import sys

root = sys.argv[1]
PROST = re.compile(r'#\[prost\((.*)\)\]')
FIELD = re.compile(r'pub (?:r#)?(\w+): (.*),$')
STRUCT = re.compile(r'pub struct (\w+) \{')


def package_of(mod_path):
    return "io.k8s." + ".".join(p.replace("_", "-") for p in mod_path)


def resolve(mod_path, rust_type):
    parts = rust_type.split("::")
    path = list(mod_path)
    name = parts[-1]
    for p in parts[:-1]:
        if p == "super":
            path.pop()
        elif p in ("crate", ""):
            path = []
        else:
            path.append(p)
    return package_of(path) + "." + name


def inner_type(rust_type):
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while rust_type.startswith(wrapper):
            rust_type = rust_type[len(wrapper):-1]
    if rust_type.startswith("::prost::alloc::collections::BTreeMap<"):
        if ", " not in rust_type:
            sys.exit("bad map type %r" % rust_type)
        rust_type = rust_type[len("::prost::alloc::collections::BTreeMap<"):-1]
        rust_type = rust_type.split(", ", 1)[1]
    return rust_type


out = []
for dirpath, _, files in sorted(os.walk(root)):
    if "mod.rs" not in files:
        continue
    mod_path = os.path.relpath(dirpath, root).split(os.sep)
    if mod_path == ["."]:
        continue
    # Only GA versions are served; alpha/beta, test and metrics packages
    # would only grow the table.
    if re.search(r"v\d+(alpha|beta)\d+$", mod_path[-1]) or mod_path[0] == "metrics" or "testapigroup" in mod_path:
        continue
    lines = [l.strip() for l in open(os.path.join(dirpath, "mod.rs"))]
    pending = None
    joined = []
    for line in lines:
        # rustfmt wraps long field types over several lines
        last = joined[-1] if joined else ""
        if last.startswith("pub ") and (not last.endswith((",", "{", "}", ";")) or last.count("<") > last.count(">")):
            joined[-1] = (last + " " + line).replace(": ", ": ").replace("< ", "<").replace(", >", ">")
            joined[-1] = joined[-1].replace(":  ", ": ").replace("<::", "<::")
        else:
            joined.append(line)
    for line in joined:
        m = STRUCT.match(line)
        if m:
            out.append("message %s.%s" % (package_of(mod_path), m.group(1)))
            continue
        m = PROST.match(line)
        if m:
            pending = m.group(1)
            continue
        m = FIELD.match(line)
        if m and pending is not None:
            attrs = pending
            pending = None
            tag = re.search(r'tag = "(\d+)"', attrs).group(1)
            name = m.group(1)
            map_m = re.match(r'btree_map = "string, (\w+)"', attrs)
            if map_m:
                label, kind = "map", map_m.group(1)
            else:
                kind = attrs.split(",")[0].split(" ")[0].split("=")[0].strip()
                label = "repeated" if "repeated" in attrs else "one"
            if kind not in ("string", "int32", "int64", "bool", "bytes", "double", "message"):
                sys.exit("unknown kind %r in %s" % (attrs, dirpath))
            field = "%s %s %s %s" % (tag, name, label, kind)
            if kind == "message":
                field += " " + resolve(mod_path, inner_type(m.group(2)))
            out.append(field)
print("\n".join(out))
