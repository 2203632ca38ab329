#!/usr/bin/env python3
"""The report of scripts/bench.sh, made from what it leaves in WORKDIR/results/.

    bench_report.py report WORKDIR REPORT.md   the Markdown table (to REPORT.md and stdout)
                                               and the raw samples (WORKDIR/bench-raw.tsv)
    bench_report.py log EXPORT.json...         per command: median, first run, samples
    bench_report.py slowest-us EXPORT.json     the longest run in a hyperfine export, µs

WORKDIR/results/ holds:
    hyperfine/*.json      hyperfine's exports; each command is named by its key
                          (record.small.tartape, ...); in NAME.warmup.json, warm-up runs
    commands.tsv          KEY <tab> the command hyperfine ran under that name
    meta.txt              KEY=VALUE lines for the header (bench.sh's `meta`)
    info.TREE.json        `tartape info --json` of each tree's tape
    randread.million.txt  "median p99 mean max count" of the random reads, µs
    rss.million.txt       pid=, VmHWM=, VmRSS_before=, VmRSS_after= (kB) of the server

Standard library only.
"""

import datetime
import json
import re
import math
import os
import sys
import time
from pathlib import Path

# ------------------------------------------------------------------ formatting


def fmt_us(u):
    """Microseconds as "123 µs", "12.3 ms" or "1.234 s"."""
    u = float(u)
    if u < 1000:
        return "%d µs" % u
    if u < 1e6:
        return "%.1f ms" % (u / 1e3)
    return "%.3f s" % (u / 1e6)


def gbps(nbytes, u):
    return "%.2f GB/s" % (nbytes / (u / 1e6) / 1e9) if u > 0 else "— GB/s"


def div(a, b):
    """a / b with two decimals: the ratio shown, and the one checked against a target."""
    return "%.2f" % (a / b if b > 0 else 0)


def check(value, op, limit):
    value = float(value)
    ok = value >= limit if op == ">=" else value <= limit
    return "yes" if ok else "**no**"


def median(samples):
    """The median; for an even count, the mean of the middle two, rounded down."""
    s = sorted(samples)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


# ------------------------------------------------------------------ reading results


def read_export(path):
    """{name: [µs, ...]} of one hyperfine JSON export."""
    with open(path) as f:
        results = json.load(f)["results"]
    return {r["command"]: [round(t * 1e6) for t in r["times"]] for r in results}


def read_kv(path):
    kv = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                kv[key] = value
    return kv


class Results:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.dir = self.workdir / "results"
        self.samples = {}  # key -> timed runs, µs (all exports, in file-name order)
        self.warmup = {}  # key -> the warm-up run, µs
        for path in sorted((self.dir / "hyperfine").glob("*.json")):
            is_warmup = path.name.endswith(".warmup.json")
            for key, times in read_export(path).items():
                if is_warmup:
                    self.warmup[key] = times[0]
                else:
                    self.samples.setdefault(key, []).extend(times)
        self.commands = {}
        commands = self.dir / "commands.tsv"
        if commands.exists():
            for line in commands.read_text().splitlines():
                key, _, command = line.partition("\t")
                self.commands[key] = command
        self.meta = read_kv(self.dir / "meta.txt")

    def med(self, key):
        if not self.samples.get(key):
            sys.exit("bench_report: no samples for %s in %s" % (key, self.dir / "hyperfine"))
        return median(self.samples[key])

    def first(self, key):
        """The warm-up run, or the first timed run of a measure without warm-up."""
        return self.warmup.get(key, self.samples[key][0])

    def info(self, tree):
        with open(self.dir / ("info.%s.json" % tree)) as f:
            return json.load(f)

    def tape(self, tree):
        return int(self.info(tree)["total_size"])


# ------------------------------------------------------------------ the table

ROWS_HEADER = "| measure | tartape | comparison | ratio | target | ok? |\n|---|---|---|---|---|---|"


def record_rows(r, tree):
    t, fnd = r.med("record.%s.tartape" % tree), r.med("record.%s.find" % tree)
    if tree == "million" and r.meta.get("skip_py_million") == "1":
        yield ("record %s vs Python" % tree, fmt_us(t), "skipped (BENCH_SKIP_PY_MILLION=1)",
               "—", "≥ 15×", "—")
    else:
        py = r.med("record.%s.python" % tree)
        ratio = div(py, t)
        yield ("record %s vs Python" % tree, fmt_us(t), "Python " + fmt_us(py), ratio + "×",
               "≥ 15×", check(ratio, ">=", 15))
    ratio = div(t, fnd)
    yield ("record %s vs find" % tree, fmt_us(t), "find " + fmt_us(fnd), ratio + "×", "≤ 2×",
           check(ratio, "<=", 2))
    if tree == "million":
        yield ("record %s, time" % tree, fmt_us(t), "—", "—", "≤ 10 s", check(t, "<=", 10_000_000))


def verify_rows(r, tree):
    v, rec = r.med("verify.%s.tartape" % tree), r.med("verify.%s.record" % tree)
    ratio = div(v, rec)
    yield ("verify %s vs record" % tree, fmt_us(v), "record " + fmt_us(rec), ratio + "×",
           "≤ 1.5×", check(ratio, "<=", 1.5))


def stream_rows(r, tree):
    b = r.tape(tree)
    t, tar, py = (r.med("pipe.%s.%s" % (tree, s)) for s in ("tartape", "tar", "python"))
    ratio = div(tar, t)
    yield ("stream %s \\| cat vs tar" % tree, "%s (%s)" % (fmt_us(t), gbps(b, t)),
           "tar %s (%s)" % (fmt_us(tar), gbps(b, tar)), ratio + "×", "≥ 1×", check(ratio, ">=", 1))
    yield ("stream %s \\| cat vs Python play" % tree, fmt_us(t),
           "Python %s (%s)" % (fmt_us(py), gbps(b, py)), div(py, t) + "×", "—", "—")
    t, tar = r.med("file.%s.tartape" % tree), r.med("file.%s.tar" % tree)
    ratio = div(tar, t)
    yield ("stream %s -o FILE vs tar -cf FILE" % tree, "%s (%s)" % (fmt_us(t), gbps(b, t)),
           "tar %s (%s)" % (fmt_us(tar), gbps(b, tar)), ratio + "×", "≥ 1×", check(ratio, ">=", 1))


def mount_read_rows(r, tree):
    b = r.tape(tree)
    c, t = r.med("mount.%s.cat" % tree), r.med("mount.%s.stream" % tree)
    stream = "stream %s (%s)" % (fmt_us(t), gbps(b, t))
    ratio = div(t, c)
    yield ("mount: cat archive.tar (%s) vs stream" % tree,
           "%s (%s; first read after mount %s)" % (fmt_us(c), gbps(b, c),
                                                   gbps(b, r.first("mount.%s.cat" % tree))),
           stream, ratio + "×", "≥ 0.5×", check(ratio, ">=", 0.5))
    if tree == "large":
        yield ("mount: cat archive.tar (%s), warm" % tree, gbps(b, c), "—", "—", "≥ 1 GB/s",
               check(b / c / 1e3, ">=", 1))
    for mode in ("", "--direct-io"):
        c = r.med("mount.%s.fresh%s" % (tree, mode))
        yield ("mount%s: first cat after mounting (%s) vs stream" % (" " + mode if mode else "", tree),
               "%s (%s)" % (fmt_us(c), gbps(b, c)), stream, div(t, c) + "×", "— (see note)", "—")


def mount_million_rows(r):
    t = r.med("mount.million.full")
    yield ("mount million (default --verify full): ready", fmt_us(t), "—", "—", "≤ 2.5 s",
           check(t, "<=", 2_500_000))
    t = r.med("mount.million.time")
    yield ("mount million (--verify quick): ready", fmt_us(t), "—", "—", "≤ 2 s",
           check(t, "<=", 2_000_000))

    med, p99, mean, mx, n = (r.dir / "randread.million.txt").read_text().split()
    yield ("random 4 KiB reads, million mount (%s)" % n, "median " + fmt_us(med),
           "p99 %s, mean %s, max %s" % (fmt_us(p99), fmt_us(mean), fmt_us(mx)), "—",
           "median ≤ 1 ms", check(med, "<=", 1000))

    rss = read_kv(r.dir / "rss.million.txt")
    name = "mount million: server peak RSS (VmHWM)"
    if rss.get("VmHWM"):
        kib = {k: float(rss.get(k) or 0) / 1024 for k in ("VmHWM", "VmRSS_before", "VmRSS_after")}
        yield (name, "%.1f MiB" % kib["VmHWM"],
               "VmRSS %.1f → %.1f MiB over the reads" % (kib["VmRSS_before"], kib["VmRSS_after"]),
               "—", "≤ 64 MiB", check(rss["VmHWM"], "<=", 65536))
    else:
        yield (name, "not found (pid '%s')" % rss.get("pid", ""), "—", "—", "≤ 64 MiB", "**no**")


def resume_rows(r):
    t = r.med("resume.million")
    yield ("stream million --offset 90% \\| head -c 1", fmt_us(t), "—", "—", "≤ 50 ms",
           check(t, "<=", 50_000))


def restore_rows(r, tree):
    volumes = (r.dir / "restore.volumes.txt").read_text().split()[0]
    holding = [n for n in (r.dir / "restore.holding.txt").read_text().split() if n]
    one = (r.dir / "restore.one.txt").read_text()
    only = (r.dir / "restore.only.txt").read_text()
    m = re.search(r"reading (\d+) of (\d+) volumes", one)
    opened = int(m.group(1)) if m else -1
    t = r.med("restore.%s.one" % tree)
    ok = opened == len(holding) and "restored 1 file" in only
    yield ("restore one file of %s from %s volumes" % (tree, volumes), fmt_us(t),
           "opened %d volume file(s); %d hold it (`locate`); restored from only those: %s"
           % (opened, len(holding), "yes" if "restored 1 file" in only else "no"),
           "—", "only those holding it", "yes" if ok else "**no**")
    b = r.tape(tree)
    t, tar = r.med("restore.%s.tartape" % tree), r.med("restore.%s.tar" % tree)
    ratio = div(tar, t)
    yield ("restore %s (whole archive) vs tar -xf" % tree, "%s (%s)" % (fmt_us(t), gbps(b, t)),
           "tar %s (%s)" % (fmt_us(tar), gbps(b, tar)), ratio + "×", "≥ 1×", check(ratio, ">=", 1))
    v = r.med("restore.%s.volumes" % tree)
    yield ("restore %s (whole, from %s volumes)" % (tree, volumes), "%s (%s)" % (fmt_us(v), gbps(b, v)),
           "tar %s" % fmt_us(tar), div(tar, v) + "×", "—", "—")


def cold_rows(r):
    """Runs each after sync and drop_caches (issue 13): medians of alternated rounds."""
    b = r.tape("small")
    t, tar, lim, mnt = (r.med("cold.small." + k) for k in ("stream", "tar", "xargs", "mount"))
    never, mnt_never = r.med("cold.small.stream-never"), r.med("cold.small.mount-never")
    ratio = div(tar, t)
    yield ("cold: stream small \\| cat vs tar", "%s (%s)" % (fmt_us(t), gbps(b, t)),
           "tar %s (%s)" % (fmt_us(tar), gbps(b, tar)), ratio + "×", "≥ 1.6×", check(ratio, ">=", 1.6))
    ratio = div(lim, t)
    yield ("cold: stream small vs 16 parallel cats", fmt_us(t), "xargs -P 16 cat %s" % fmt_us(lim),
           ratio + "×", "≥ 0.85×", check(ratio, ">=", 0.85))
    yield ("cold: stream small without read-ahead (before)", fmt_us(never),
           "with it %s" % fmt_us(t), div(never, t) + "×", "—", "—")
    ratio = div(lim, mnt)
    yield ("cold: first cat of a fresh mount (small) vs 16 parallel cats",
           "%s (%s)" % (fmt_us(mnt), gbps(b, mnt)), "xargs -P 16 cat %s" % fmt_us(lim),
           ratio + "×", "≥ 0.85×", check(ratio, ">=", 0.85))
    yield ("cold: first cat of a fresh mount (small) vs tar", fmt_us(mnt), "tar %s" % fmt_us(tar),
           div(tar, mnt) + "×", "—", "—")
    yield ("cold: first cat of a fresh mount (small) without read-ahead (before)", fmt_us(mnt_never),
           "with it %s" % fmt_us(mnt), div(mnt_never, mnt) + "×", "—", "—")
    b = r.tape("large")
    t, tar, null, cat, never = (r.med("cold.large." + k)
                                for k in ("stream", "tar", "stream-null", "cat", "stream-never"))
    ratio = div(tar, t)
    yield ("cold: stream large \\| cat vs tar", "%s (%s)" % (fmt_us(t), gbps(b, t)),
           "tar %s (%s)" % (fmt_us(tar), gbps(b, tar)), ratio + "×", "—", "—")
    ratio = div(cat, null)
    yield ("cold: stream large >/dev/null vs cat of its files", "%s (%s)" % (fmt_us(null), gbps(b, null)),
           "cat %s (%s)" % (fmt_us(cat), gbps(b, cat)), ratio + "×", "≥ 1×", check(ratio, ">=", 1))
    yield ("cold: stream large without read-ahead (before)", fmt_us(never),
           "with it %s" % fmt_us(t), div(never, t) + "×", "—", "—")
    mem = read_kv(r.dir / "cold.memory.txt")
    for what, key in (("stream small", "stream.small"), ("stream large", "stream.large"),
                      ("mount server (small)", "mount.small")):
        after, before = mem.get(key + ".auto", ""), mem.get(key + ".never", "")
        ok = check(after, "<=", 65536) if after else "**no**"
        mib = lambda kb: "%.1f MiB" % (float(kb) / 1024) if kb else "?"
        yield ("cold: %s peak memory (VmHWM)" % what, mib(after), "without read-ahead %s" % mib(before),
               "—", "≤ 64 MiB", ok)


def upload_rows(r, tree):
    """`tartape upload` to a local S3 server (SPEC §9) against `rclone copyto`."""
    b = r.tape(tree)
    t, rc = r.med("upload.%s.tartape" % tree), r.med("upload.%s.rclone" % tree)
    ratio = div(rc, t)
    yield ("upload %s to a local S3 server vs rclone copyto of the tar (16 MiB parts, 4 at once)" % tree,
           "%s (%s)" % (fmt_us(t), gbps(b, t)), "rclone %s (%s)" % (fmt_us(rc), gbps(b, rc)),
           ratio + "×", "≥ 1×", check(ratio, ">=", 1))
    kv = read_kv(r.dir / "upload.resume.txt")
    with open(r.dir / "upload.resume.json") as f:
        resumed = json.loads(f.read().strip().splitlines()[-1])
    total, part, jobs = int(kv["total"]), int(kv["part"]), int(kv["jobs"])
    before = int(kv["confirmed_before_kill"])
    missing = total - before * part
    bound = missing + jobs * part
    sent = int(resumed["bytes_sent"])
    yield ("upload %s: resumed after a kill at %d of %d parts" % (tree, before, int(resumed["parts"])),
           "sent %d bytes (%d parts new, %d kept)" % (sent, int(resumed["parts"]) - int(resumed["parts_reused"]),
                                                      int(resumed["parts_reused"])),
           "missing %d bytes + %d × %d MiB" % (missing, jobs, part >> 20), div(sent, bound),
           "≤ missing + jobs × part", check(sent, "<=", bound))
    mem = read_kv(r.dir / "upload.memory.txt")
    for size in ("16M", "256M"):
        kb = float(mem.get("part." + size) or 0)
        yield ("upload %s peak memory, %s parts, 4 jobs (ru_maxrss)" % (tree, size), "%.1f MiB" % (kb / 1024),
               "—", "—", "≤ 64 MiB + 4 × 16 MiB", check(kb, "<=", (64 + 4 * 16) * 1024))


def serve_rows(r):
    """`tartape serve` against nginx serving the same bytes from a real file (SPEC §10)."""
    b = r.tape("large")
    t, n = r.med("serve.large.tartape"), r.med("serve.large.nginx")
    ratio = div(n, t)
    yield ("serve: one connection (curl) downloading large", "%s (%s)" % (fmt_us(t), gbps(b, t)),
           "nginx %s (%s)" % (fmt_us(n), gbps(b, n)), ratio + "×", "≥ 0.5×", check(ratio, ">=", 0.5))
    t, n = r.med("serve.aria2.tartape"), r.med("serve.aria2.nginx")
    ratio = div(n, t)
    yield ("serve: aria2c -x 8 -s 8 of large", "%s (%s)" % (fmt_us(t), gbps(b, t)),
           "nginx %s (%s)" % (fmt_us(n), gbps(b, n)), ratio + "×", "≥ 0.7×", check(ratio, ">=", 0.7))
    ours = (r.dir / "serve.randread.txt").read_text().split()
    theirs = (r.dir / "serve.randread.nginx.txt").read_text().split()
    med = float(ours[0])
    yield ("serve: random 4 KiB ranges, keep-alive, million tape (median; p99)",
           "%s; p99 %s" % (fmt_us(med), fmt_us(float(ours[1]))),
           "nginx %s; p99 %s" % (fmt_us(float(theirs[0])), fmt_us(float(theirs[1]))), "—",
           "median ≤ 1 ms", check(med, "<=", 1000))
    rss = read_kv(r.dir / "serve.rss.txt")
    mib = lambda key: "%.1f MiB" % (float(rss.get(key) or 0) / 1024)
    yield ("serve: server memory (VmRSS) at start / 200 idle / 200 active connections",
           "%s / %s / %s" % (mib("start"), mib("idle"), mib("active")),
           "peak (VmHWM) %s" % mib("active.hwm"), "—", "—", "—")


def ran(r, key):
    """Whether the run measured KEY (BENCH_ONLY may leave sections out)."""
    return bool(r.samples.get(key))


def rows(r):
    skipped = lambda what: ("%s: not run (BENCH_ONLY=%s)" % (what, r.meta.get("only", "")),
                            "—", "—", "—", "—", "—")
    for tree in ("small", "large", "million"):
        if ran(r, "record.%s.tartape" % tree):
            yield from record_rows(r, tree)
        else:
            yield skipped("record " + tree)
    for tree in ("small", "million"):
        if ran(r, "verify.%s.tartape" % tree):
            yield from verify_rows(r, tree)
    for tree in ("small", "large"):
        if ran(r, "pipe.%s.tartape" % tree):
            yield from stream_rows(r, tree)
    why = r.meta.get("mount_unavailable")
    if why:
        yield ("mount: not available (%s)" % why, "—", "—", "—", "—", "—")
    elif ran(r, "mount.small.cat"):
        for tree in ("small", "large"):
            yield from mount_read_rows(r, tree)
        yield from mount_million_rows(r)
    if ran(r, "resume.million"):
        yield from resume_rows(r)
    if ran(r, "restore.small.one"):
        yield from restore_rows(r, "small")
    if ran(r, "upload.large.tartape"):
        yield from upload_rows(r, "large")
    else:
        yield skipped("upload")
    if ran(r, "serve.large.tartape"):
        yield from serve_rows(r)
    else:
        yield skipped("serve")
    why = r.meta.get("cold_unavailable")
    if why:
        yield ("cold runs: not done (%s)" % why, "—", "—", "—", "—", "—")
    elif ran(r, "cold.small.stream"):
        yield from cold_rows(r)


def header(r, raw_path):
    m = r.meta
    small_n, large_n, large_mib, _ = m["trees"].split()
    info = {tree: r.info(tree) for tree in ("small", "large", "million")}
    runs, fast_runs = int(m["runs"]), int(m["fast_runs"])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        "# tartape benchmark%s" % (" (--quick)" if m.get("quick") == "1" else ""),
        "",
        "- date: %s; tartape %s; machine: %s" % (date, m["tartape"], m["machine"]),
        "- trees (under %s): small %s files → tape %s B (%s entries); large %s × %s MiB → tape %s B; "
        "million %s entries → tape %s B"
        % (m["workdir"], small_n, info["small"]["total_size"], info["small"].get("entry_count", "?"),
           large_n, large_mib, info["large"]["total_size"],
           info["million"].get("entry_count", "?"), info["million"]["total_size"]),
        "- each time is the median of %d runs after 1 warm-up (%d runs when the warm-up took under "
        "100 ms; Python record of the million tree: 1 run, no warm-up), timed by hyperfine; "
        "record vs find, verify vs record and stream vs tar run as pairs in both orders "
        "(A then B, then B then A: %d runs per side, %d when fast); page cache warm; "
        "raw samples in %s"
        % (runs, fast_runs, 2 * math.ceil(runs / 2), 2 * math.ceil(fast_runs / 2), raw_path),
        "- ratios: record = Python/tartape and tartape/find; verify = verify/record (run as a pair); "
        "stream = tar/tartape (≥ 1 means tartape is faster); mount = cat throughput / stream throughput",
        "- stream never splices pages of source files into the pipe (SPEC §3): every byte is read, "
        "checked after the read, then written (into a regular file with -o, large contents are copied "
        "by copy_file_range and checked after the copy); mount million: ready = `tartape mount` "
        "returned and archive.tar is readable, with the default full check and with --verify quick",
        "- Python tartape 3.0.3: `record` is timed as a whole process, like `tartape record` "
        "(`python bench_helper.py record`: start-up, import and the `tartape.record(DIR, "
        "catalog_path=…, exclude=[], overwrite=True)` call); play is the whole process "
        "`python bench_helper.py play` (`tartape.open(…).as_file()`, `read(1 MiB)` → stdout) "
        "`| cat >/dev/null`, like the other pipe rows",
        "- mount read: `cat MNT/archive.tar >/dev/null` (median of the warm runs; the first read "
        "after mounting is the warm-up, shown too) vs `tartape stream DIR >/dev/null`; \"first cat "
        "after mounting\": median of runs each on a fresh mount (archive.tar not in the page cache, "
        "the source is), default and `--direct-io`; no target of its own: the filling of fresh "
        "page-cache pages bounds it on a virtual machine; random reads: `os.pread` of aligned 4 KiB "
        "pages at distinct random offsets, POSIX_FADV_RANDOM, after 200 warm-up reads",
        "- cold rows (root only): each run after `sync` and `echo 3 > /proc/sys/vm/drop_caches` "
        "(a fresh mount is made before it), the commands alternated run by run, median of %s rounds; "
        "the disk's parallel limit is `find small -type f -print0 | xargs -0 -P 16 -n 100 cat`; "
        "\"cat of its files\" is `find large -type f -print0 | sort -z | xargs -0 cat >/dev/null`; "
        "\"before\" is `TARTAPE_PREFETCH=never` (no read-ahead); peak memory: VmHWM of one more cold "
        "run (`ru_maxrss` of stream; the server's VmHWM after a cold cat)" % m.get("cold_runs", "?"),
        "",
    ]


def raw_lines(r):
    """bench-raw.tsv: every key's warm-up and timed runs, then the other measurements."""
    yield "key\tfirst_run_us\tsamples_us\tcommand"
    for key in list(r.commands) + [k for k in r.samples if k not in r.commands]:
        if key in r.samples:
            yield "%s\t%s\t%s\t%s" % (key, r.first(key), " ".join(map(str, r.samples[key])),
                                      r.commands.get(key, ""))
    randread = r.dir / "randread.million.txt"
    if randread.exists():
        yield "randread.million\t%s\t(median p99 mean max n, µs)" % randread.read_text().strip()
    rss = read_kv(r.dir / "rss.million.txt")
    if rss.get("VmHWM"):
        yield "rss.million\tVmHWM %s kB, VmRSS before reads %s kB, after %s kB (pid %s)" % (
            rss["VmHWM"], rss.get("VmRSS_before", ""), rss.get("VmRSS_after", ""), rss.get("pid", ""))


def write_atomically(path, text):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def report(workdir, report_path):
    r = Results(workdir)
    raw_path = r.workdir / "bench-raw.tsv"
    lines = header(r, raw_path) + [ROWS_HEADER]
    lines += ["| %s |" % " | ".join(row) for row in rows(r)]
    lines += ["", "total bench time: %s" % fmt_us((time.time() - float(r.meta["started"])) * 1e6)]
    text = "\n".join(lines) + "\n"
    write_atomically(raw_path, "\n".join(raw_lines(r)) + "\n")
    write_atomically(report_path, text)
    sys.stdout.write(text)


# ------------------------------------------------------------------ for bench.sh's log


def log(paths):
    samples, warmup = {}, {}
    for path in paths:
        for key, times in read_export(path).items():
            if path.endswith(".warmup.json"):
                warmup[key] = times[0]
            else:
                samples.setdefault(key, []).extend(times)
    for key, times in samples.items():
        first = warmup.get(key, times[0])
        print("  %s median %s  (first %s µs; samples µs: %s)"
              % (key, fmt_us(median(times)), first, " ".join(map(str, times))))


def slowest_us(path):
    print(max(max(times) for times in read_export(path).values()))


def main(argv):
    if len(argv) == 3 and argv[0] == "report":
        report(argv[1], argv[2])
    elif len(argv) >= 2 and argv[0] == "log":
        log(argv[1:])
    elif len(argv) == 2 and argv[0] == "slowest-us":
        slowest_us(argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
