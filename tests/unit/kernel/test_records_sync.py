"""bpf/busted.h (and bpf/enforce.bpf.c) and busted/kernel/records.py describe the same bytes.

The registry in records.py is walked, not a list written here: every struct of the two
C files has a mirror or is named kernel-only, and every constant of records.py that
has a #define of the same name in busted.h equals it. The C structs are parsed here
(a tiny C layout calculator for the types the files use: fixed-width integers, char/u8
arrays, nested structs) and every size and field offset is compared with the ctypes
mirror. Pure Python: no compiler, no root.
"""

from __future__ import annotations

import ctypes as ct
import re

import pytest

from busted.kernel import records

SCALARS = {"u8": 1, "s8": 1, "char": 1, "u16": 2, "s16": 2, "u32": 4, "s32": 4, "u64": 8, "s64": 8}


def header_text(path=records.HEADER_PATH) -> str:
    text = path.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def defines(text: str) -> dict[str, int]:
    out = {}
    for name, value in re.findall(r"#define\s+(\w+)\s+(\d+)\b", text):
        out.setdefault(name, int(value))
    return out


def parse_structs(text: str) -> dict[str, dict]:
    consts = {"TASK_COMM_LEN": records.COMM_LEN, **defines(text)}  # the kernel's, 16
    structs: dict[str, dict] = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\};", text, flags=re.S):
        offset, align, fields = 0, 1, {}
        for decl in filter(None, (d.strip() for d in body.split(";"))):
            m = re.fullmatch(r"(struct\s+\w+|\w+)\s+(\w+)(?:\[(\w+)\])?", " ".join(decl.split()))
            assert m, f"cannot parse {decl!r} in struct {name}"
            ctype, field, count = m.groups()
            if ctype.startswith("struct "):
                inner = structs[ctype.split()[1]]
                size, falign = inner["size"], inner["align"]
            else:
                size = falign = SCALARS[ctype]
            n = 1 if count is None else int(consts.get(count, count))
            offset = (offset + falign - 1) // falign * falign
            fields[field] = (offset, size * n)
            offset += size * n
            align = max(align, falign)
        structs[name] = {"fields": fields, "size": (offset + align - 1) // align * align,
                         "align": align}
    return structs


STRUCTS = parse_structs(header_text())
ENFORCE_STRUCTS = parse_structs(header_text(records.ENFORCE_PATH))
ALL_STRUCTS = {**STRUCTS, **ENFORCE_STRUCTS}
ALL_MIRRORS = {**records.MIRRORS, **records.ENFORCE_MIRRORS}


def test_every_struct_is_in_the_registry():
    assert set(STRUCTS) == set(records.MIRRORS) | records.KERNEL_ONLY
    assert set(ENFORCE_STRUCTS) == set(records.ENFORCE_MIRRORS)


@pytest.mark.parametrize("cname", sorted(ALL_MIRRORS))
def test_struct_layout_matches(cname):
    c = ALL_STRUCTS[cname]
    mirror = ALL_MIRRORS[cname]
    for field, (offset, size) in c["fields"].items():
        if cname == "data_rec" and field == "data":
            # the flexible payload: the ctypes mirror stops where it starts
            assert offset == ct.sizeof(mirror) == records.DATA_HEADER_SIZE
            continue
        py = getattr(mirror, field)
        assert (py.offset, py.size) == (offset, size), f"{cname}.{field}"
    expected = c["size"] if cname != "data_rec" else c["fields"]["data"][0]
    assert ct.sizeof(mirror) == expected
    py_fields = {f[0] for f in mirror._fields_}
    assert py_fields == set(c["fields"]) - ({"data"} if cname == "data_rec" else set())


def test_constants_match():
    consts = defines(header_text())
    shared = {name: value for name, value in vars(records).items()
              if name in consts and isinstance(value, int)}
    for name, value in shared.items():
        assert value == consts[name], name
    # the registry walk reaches at least these (a renamed constant must not slip out)
    assert set(shared) >= {"REC_DATA", "REC_SNI", "REC_SSL_FREE", "REC_CONNECT", "REC_ESTABLISHED",
                 "REC_CLOSE", "REC_EXEC", "REC_SSL_FD", "REC_EXIT", "REC_LIBOPEN", "PATH_LEN",
                 "REC_HELLO", "HELLO_LEN", "SRC_HELLO", "REC_EXCHANGE",
                 "SRC_TLS", "SRC_PLAIN", "SRC_DNS",
                 "DIR_WRITE", "DIR_READ", "FLAG_TRUNCATED", "FLAG_WIDE", "LOST_RINGBUF", "LOST_READ",
                 "LOST_STASH", "LOST_SLOTS", "COMM_LEN", "SNI_LEN",
                 "FLAG_HELD", "LIB_HELD", "LIB_WRITING", "VERDICT_SKIP", "VERDICT_NO_HOLD"}


def test_structs_have_no_hidden_padding():
    # every byte is a named field: the C compiler and ctypes cannot disagree on holes
    for cname, c in ALL_STRUCTS.items():
        covered = sum(size for _, size in c["fields"].values())
        assert covered == c["size"], cname


def test_fast_payload_header_decodes_like_ctypes():
    rec = records.DataRec(conn_id=1 << 60, sk=7, call_len=100, offset=16384, len=99, fd=-3,
                          source=records.SRC_PLAIN, direction=records.DIR_READ, flags=1)
    rec.h.ts_ns, rec.h.type, rec.h.pid, rec.h.tid = 123, records.REC_DATA, 10, 11
    rec.h.uid, rec.h.gid, rec.h.cgroup_id, rec.h.comm = 12, 13, 14, b"comm"
    assert records.DATA_STRUCT.size == ct.sizeof(records.DataRec)
    fast = records.DataHead(bytes(rec))
    for name in records.DataHead.__slots__:
        expected = getattr(rec.h, name) if hasattr(rec.h, name) else getattr(rec, name)
        got = getattr(fast, name)
        if name == "comm":
            got = got.rstrip(b"\0")
        assert got == expected, name
