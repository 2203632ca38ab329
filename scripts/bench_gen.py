#!/usr/bin/env python3
"""Deterministic benchmark trees for scripts/bench.sh.

    bench_gen.py small   DEST N_FILES
    bench_gen.py large   DEST N_FILES MIB_PER_FILE
    bench_gen.py million DEST N_ENTRIES

Every byte, name, mode and mtime depends only on the arguments, so two runs
(on any machine) produce identical trees and identical tapes. DEST must not
exist yet; the caller removes a stale tree first.

* small:   N_FILES files with exponentially distributed sizes (mean 6 KiB,
           so the median is ~4 KiB and 100,000 files make ~600 MB), 100 files
           per directory, directories nested two levels (dNN/dNNN/fNNNNNN).
* large:   N_FILES non-sparse files of MIB_PER_FILE MiB of incompressible
           data (a 1 MiB pseudo-random block, rotated differently per MiB).
* million: N_ENTRIES entries, 1000 files per directory nested two levels;
           every 100th file holds 1..4096 bytes, the rest are empty.
"""

import os
import random
import sys

BASE_MTIME = 1_700_000_000  # 2023-11-14, fixed so re-runs are identical
POOL_SIZE = 32 << 20


def pool(seed):
    return random.Random(seed).randbytes(POOL_SIZE)


def write_file(dir_fd, name, data, mtime):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
    os.utime(name, ns=(mtime * 10**9, mtime * 10**9), dir_fd=dir_fd)


def nested(dest, count, per_dir, make_file):
    """Create `count` files, `per_dir` per leaf directory, leaves grouped 100
    per top-level directory; directory mtimes are fixed bottom-up."""
    os.mkdir(dest)
    leaves = (count + per_dir - 1) // per_dir
    top_dirs = []
    i = 0
    for leaf in range(leaves):
        top = os.path.join(dest, "d%03d" % (leaf // 100))
        if leaf % 100 == 0:
            os.mkdir(top)
            top_dirs.append(top)
        path = os.path.join(top, "d%03d" % (leaf % 100))
        os.mkdir(path)
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(min(per_dir, count - i)):
                make_file(dfd, "f%07d" % i, i)
                i += 1
        finally:
            os.close(dfd)
        t = BASE_MTIME + leaf
        os.utime(path, ns=(t * 10**9, t * 10**9))
    for n, top in enumerate(top_dirs):
        t = BASE_MTIME + 500_000 + n
        os.utime(top, ns=(t * 10**9, t * 10**9))
    os.utime(dest, ns=(BASE_MTIME * 10**9, BASE_MTIME * 10**9))


def gen_small(dest, count):
    data = pool(1)
    rng = random.Random(2)

    def make(dfd, name, i):
        size = min(int(rng.expovariate(1 / 6144)), 1 << 20)
        off = rng.randrange(0, POOL_SIZE - size)
        write_file(dfd, name, data[off : off + size], BASE_MTIME + i)

    nested(dest, count, 100, make)


def gen_large(dest, count, mib):
    block = memoryview(pool(3)[: 1 << 20])
    os.mkdir(dest)
    for n in range(count):
        name = os.path.join(dest, "large%02d.bin" % n)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for k in range(mib):
                r = (k * 40_503 + n * 7_919) % (1 << 20)  # a distinct rotation per MiB
                for part in (block[r:], block[:r]):
                    while part:
                        w = os.write(fd, part)
                        part = part[w:]
        finally:
            os.close(fd)
        t = BASE_MTIME + n
        os.utime(name, ns=(t * 10**9, t * 10**9))
    os.utime(dest, ns=(BASE_MTIME * 10**9, BASE_MTIME * 10**9))


def gen_million(dest, count):
    data = pool(4)
    rng = random.Random(5)

    def make(dfd, name, i):
        if i % 100 == 0:
            size = rng.randrange(1, 4097)
            off = rng.randrange(0, POOL_SIZE - size)
            write_file(dfd, name, data[off : off + size], BASE_MTIME + i)
        else:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
            os.close(fd)
            t = (BASE_MTIME + i) * 10**9
            os.utime(name, ns=(t, t), dir_fd=dfd)

    nested(dest, count, 1000, make)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    kind, dest, *nums = argv[1:]
    nums = [int(x) for x in nums]
    if os.path.lexists(dest):
        sys.exit("bench_gen: %s already exists" % dest)
    os.umask(0o022)
    if kind == "small" and len(nums) == 1:
        gen_small(dest, *nums)
    elif kind == "large" and len(nums) == 2:
        gen_large(dest, *nums)
    elif kind == "million" and len(nums) == 1:
        gen_million(dest, *nums)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
