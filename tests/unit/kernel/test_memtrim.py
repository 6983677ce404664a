"""Which mappings capture may drop after compiling, and that dropping them is harmless."""

from __future__ import annotations

import ctypes

from busted.kernel import memtrim

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                 512 kB
Anonymous:             0 kB
7f0000100000-7f0000900000 r-xp 00100000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                8192 kB
Anonymous:             0 kB
7f0000900000-7f0000a00000 r--p 00900000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                1024 kB
Anonymous:          1024 kB
7f0000a00000-7f0000b00000 rw-p 00a00000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                1024 kB
Anonymous:           512 kB
7f0000b00000-7f0000c00000 r-xp 00000000 fe:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1024 kB
Anonymous:             0 kB
7f0000c00000-7f0000d00000 r-xs 00000000 fe:01 1235   /usr/lib/llvm-14/lib/libclang-cpp.so.14
Rss:                1024 kB
Anonymous:             0 kB
7f0000d00000-7f0000e00000 r-xp 00000000 fe:01 1235   /usr/lib/llvm-14/lib/libclang-cpp.so.14
Rss:                   0 kB
Anonymous:             0 kB
"""


def test_only_clean_read_only_private_compiler_mappings_are_dropped():
    ranges = memtrim.clean_compiler_mappings(SMAPS)
    # the relocated read-only part (copied pages), the writable part, libc, a shared
    # mapping and a mapping with nothing resident are all left alone
    assert ranges == [(0x7F0000000000, 0x7F0000100000), (0x7F0000100000, 0x7F0000900000)]


def test_releasing_keeps_the_libraries_usable():
    llvm = ctypes.CDLL("libLLVM-14.so.1")  # loaded the way bcc loads it
    with open("/proc/self/smaps") as f:
        memtrim.clean_compiler_mappings(f.read())
    assert memtrim.release_compiler_memory() >= 0
    # code in a dropped mapping faults back in from the file and still runs
    llvm.LLVMContextCreate.restype = ctypes.c_void_p
    ctx = llvm.LLVMContextCreate()
    assert ctx
    llvm.LLVMContextDispose.argtypes = [ctypes.c_void_p]
    llvm.LLVMContextDispose(ctypes.c_void_p(ctx))


def test_trim_if_grown_trims_only_after_growth():
    memtrim.release_compiler_memory()  # sets the baseline
    assert memtrim.trim_if_grown() is False
    block = bytearray(40 * 1024 * 1024)  # touched: 40 MB resident
    block[::4096] = b"x" * len(block[::4096])
    assert memtrim.trim_if_grown() is True
    del block
