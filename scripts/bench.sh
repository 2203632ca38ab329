#!/usr/bin/env bash
# tartape's benchmark: the scoreboard for SPEC.md §7.
#
#   scripts/bench.sh [--quick] WORKDIR [REPORT.md]
#
# Builds target/release/tartape, installs what it needs (GNU tar, findutils, fuse3,
# a virtualenv at WORKDIR/venv with the Python tartape 3.0.3), generates three
# deterministic trees under WORKDIR once (small/, large/, million/; a marker file
# WORKDIR/.gen-NAME records what was generated) and times, side by side, tartape
# against GNU tar, find and the Python tartape. Each measure gets one warm-up run and
# BENCH_RUNS (default 5) timed runs; the table shows medians. The pairs whose ratio is a
# target (record vs find, stream vs tar) run alternately, so that drift of the machine's
# speed during a run moves both sides alike. The table goes to stdout
# and, as Markdown, to REPORT.md (default WORKDIR/bench-report.md); the raw samples go
# to WORKDIR/bench-raw.tsv and the commands' stderr to WORKDIR/bench-commands.log.
#
# --quick scales the trees down (10k small files, one 256 MiB file, 100k entries) for
# a smoke run. A missed target never fails the script; a failing command does.
#
# Environment:
#   BENCH_RUNS=N              timed runs per measure (default 5)
#   BENCH_FAST_RUNS=N         timed runs of a measure whose warm-up took under 100 ms
#                             (default 21: a few milliseconds are noisy)
#   BENCH_SKIP_PY_MILLION=1   skip the Python record of the million-entry tree
#                             (by default it runs once, without warm-up: it is slow)
#   BENCH_RANDOM_READS=N      random 4 KiB reads through the mount (default 2000)
#   BENCH_NO_BUILD=1          do not run cargo build
#   BENCH_TARTAPE=PATH        use this tartape binary (implies BENCH_NO_BUILD=1)
set -euo pipefail
export LC_ALL=C

usage() {
    if (($1)); then exec >&2; fi
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit "$1"
}

QUICK=0
POS=()
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        -h | --help) usage 0 ;;
        -*) echo "bench.sh: unknown option $1" >&2; usage 2 ;;
        *) POS+=("$1") ;;
    esac
    shift
done
((${#POS[@]} >= 1 && ${#POS[@]} <= 2)) || usage 2

RUNS=${BENCH_RUNS:-5}
FAST_RUNS=${BENCH_FAST_RUNS:-21} # timed runs of a measure whose warm-up took < FAST_US
FAST_US=100000
[[ $FAST_RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: BENCH_FAST_RUNS must be a positive integer" >&2; exit 2; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: BENCH_RUNS must be a positive integer" >&2; exit 2; }
NREADS=${BENCH_RANDOM_READS:-2000}
[[ $NREADS =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: BENCH_RANDOM_READS must be a positive integer" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p -- "${POS[0]}"
WORKDIR=$(realpath -- "${POS[0]}")
[[ $WORKDIR != / ]] || { echo "bench.sh: refusing WORKDIR=/" >&2; exit 2; }
REPORT=$(realpath -m -- "${POS[1]:-$WORKDIR/bench-report.md}")
CAT=$WORKDIR/cat
RAW=$WORKDIR/bench-raw.tsv
CMDLOG=$WORKDIR/bench-commands.log
HELPER=$WORKDIR/bench_helper.py
PY=$WORKDIR/venv/bin/python

if ((QUICK)); then
    SMALL_N=10000 LARGE_N=1 LARGE_MIB=256 MILLION_N=100000
else
    SMALL_N=100000 LARGE_N=4 LARGE_MIB=1024 MILLION_N=1000000
fi

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "ERROR: $*"
    if [[ -s $CMDLOG ]]; then
        log "last lines of $CMDLOG:"
        tail -n 15 -- "$CMDLOG" >&2
    fi
    exit 1
}

# rm -rf, but only strictly inside WORKDIR.
safe_rm() {
    local p real
    for p; do
        real=$(realpath -m -- "$p")
        case $real in
            "$WORKDIR"/?*) rm -rf -- "$real" ;;
            *) die "refusing to remove $p: not inside $WORKDIR" ;;
        esac
    done
}

# ---------------------------------------------------------------- mounts & cleanup
TT=
SERVER_PID=
MOUNTS=()   # mount points this run may have mounted
SERVERS=()  # "pid mountpoint" of serving processes our mounts started

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }

unmount() {
    local m=$1
    is_mounted "$m" || return 0
    "$TT" umount "$m" >>"$CMDLOG" 2>&1 ||
        fusermount3 -u "$m" >>"$CMDLOG" 2>&1 ||
        fusermount -u "$m" >>"$CMDLOG" 2>&1 ||
        umount -l "$m" >>"$CMDLOG" 2>&1 || true
    is_mounted "$m" && return 1
    return 0
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? m entry pid mnt i
    for m in "${MOUNTS[@]}"; do
        unmount "$m" || log "WARNING: could not unmount $m"
    done
    # A server that outlived its unmount: it is a process we started, identified by
    # pid and checked against its command line (never by name alone).
    for entry in "${SERVERS[@]}"; do
        pid=${entry%% *} mnt=${entry#* }
        for ((i = 0; i < 50; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$mnt"; then
            log "WARNING: server $pid for $mnt still running after unmount; sending SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
ensure_tools() {
    local pkgs=()
    [[ $(tar --version 2>/dev/null || true) == *'GNU tar'* ]] || pkgs+=(tar)
    # shellcheck disable=SC2185
    [[ $(find --version 2>/dev/null || true) == *GNU* ]] || pkgs+=(findutils)
    command -v python3 >/dev/null || pkgs+=(python3 python3-venv)
    command -v fusermount3 >/dev/null || command -v fusermount >/dev/null || pkgs+=(fuse3)
    command -v mountpoint >/dev/null || pkgs+=(util-linux)
    if ((${#pkgs[@]})); then
        log "installing ${pkgs[*]}"
        apt-get update -qq >>"$CMDLOG" 2>&1 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >>"$CMDLOG" 2>&1 ||
            die "apt-get install ${pkgs[*]} failed"
    fi
    [[ $(tar --version) == *'GNU tar'* ]] || die "tar is not GNU tar"
    command -v cargo >/dev/null || [[ -n ${BENCH_TARTAPE:-} ]] || die "cargo not found"

    if ! "$PY" -c 'import sys, tartape; sys.exit(tartape.__version__ != "3.0.3")' 2>/dev/null; then
        log "creating $WORKDIR/venv with tartape==3.0.3"
        if ! python3 -m venv --clear "$WORKDIR/venv" >>"$CMDLOG" 2>&1; then
            apt-get update -qq >>"$CMDLOG" 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >>"$CMDLOG" 2>&1 ||
                die "cannot install python3-venv"
            python3 -m venv --clear "$WORKDIR/venv" >>"$CMDLOG" 2>&1 || die "python3 -m venv failed"
        fi
        "$PY" -m pip install -q 'tartape==3.0.3' >>"$CMDLOG" 2>&1 || die "pip install tartape==3.0.3 failed"
    fi
}

write_helper() {
    cat >"$HELPER" <<'EOF'
"""Timed Python-side operations for bench.sh; the last stdout line is microseconds."""
import os, random, sys, time

def us(t0):
    return (time.perf_counter_ns() - t0) // 1000

cmd = sys.argv[1]
if cmd == "record":  # record DIR CATALOG -> time of tartape.record() alone
    import tartape
    t0 = time.perf_counter_ns()
    tartape.record(sys.argv[2], catalog_path=sys.argv[3], exclude=[], overwrite=True)
    print(us(t0))
elif cmd == "play":  # play DIR CATALOG: the whole tape to stdout, as `tartape stream`
    import tartape
    t = tartape.open(sys.argv[2], catalog_path=sys.argv[3])
    f = t.as_file()
    out = sys.stdout.buffer
    n = 0
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        out.write(b)
        n += len(b)
    out.flush()
    if n != t.total_size:
        sys.exit("play: read %d bytes, tape is %d" % (n, t.total_size))
elif cmd == "randread":  # randread FILE COUNT -> "median_us p99_us mean_us max_us"
    path, count = sys.argv[2], int(sys.argv[3])
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pages = size // 4096
        if pages < 2:
            sys.exit("randread: %s is too small" % path)
        # A random reader: no readahead, so each read is one request to the server.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        rng = random.Random(12345)
        offs = rng.sample(range(pages), min(pages, count + 200))
        for p in offs[:200]:  # warm-up: first requests, thread start-up
            os.pread(fd, 4096, p * 4096)
        lat = []
        for p in offs[200:]:
            t0 = time.perf_counter_ns()
            b = os.pread(fd, 4096, p * 4096)
            lat.append(time.perf_counter_ns() - t0)
            if len(b) != 4096:
                sys.exit("randread: short read at %d" % (p * 4096))
    finally:
        os.close(fd)
    lat.sort()
    n = len(lat)
    med = lat[n // 2] if n % 2 else (lat[n // 2 - 1] + lat[n // 2]) // 2
    p99 = lat[min(n - 1, (99 * n + 99) // 100 - 1)]
    print(med / 1000, p99 / 1000, sum(lat) / n / 1000, lat[-1] / 1000, n)
elif cmd == "json":  # json KEY < object
    import json
    print(json.load(sys.stdin)[sys.argv[2]])
else:
    sys.exit("bench_helper: unknown command " + cmd)
EOF
}

# ---------------------------------------------------------------- generation
gen_tree() {
    local name=$1 spec marker
    shift
    spec="bench_gen v1: $name $*"
    marker=$WORKDIR/.gen-$name
    if [[ -f $marker && -d $WORKDIR/$name && $(<"$marker") == "$spec" ]]; then
        log "tree $name: present ($spec)"
        return
    fi
    log "tree $name: generating ($spec)"
    safe_rm "$marker" "$WORKDIR/$name"
    rm -f -- "$CAT/$name".*
    "$PY" "$REPO/scripts/bench_gen.py" "$name" "$WORKDIR/$name" "$@" || die "generating $name failed"
    printf '%s\n' "$spec" >"$marker"
}

# ---------------------------------------------------------------- timing
declare -A MED   # key -> median, microseconds
declare -A FIRST # key -> first run (the warm-up, if any), microseconds
declare -A TAPE  # tree -> tape size in bytes
declare -A NENT  # tree -> entry count

# run_one MODE CMD: run CMD (cwd WORKDIR) and set REPLY to microseconds: wall clock
# for MODE=wall, the last line CMD prints for MODE=self.
run_one() {
    local mode=$1 cmd=$2 t0 t1 out
    if [[ $mode == wall ]]; then
        t0=$EPOCHREALTIME
        if ! eval "$cmd"; then die "command failed: $cmd"; fi
        t1=$EPOCHREALTIME
        REPLY=$((${t1/./} - ${t0/./}))
    else
        if ! out=$(eval "$cmd"); then die "command failed: $cmd"; fi
        REPLY=${out##*$'\n'}
        [[ $REPLY =~ ^[0-9]+$ ]] || die "no timing printed by: $cmd"
    fi
}

# measure KEY MODE WARMUPS RUNS CMD [PREP]: median of RUNS runs after WARMUPS; PREP
# (untimed) runs before each.
measure() {
    local key=$1 mode=$2 warm=$3 runs=$4 cmd=$5 prep=${6:-} i samples=()
    log "$key: $cmd  (${warm} warm-up + ${runs})"
    for ((i = 0; i < warm + runs; i++)); do
        if [[ -n $prep ]]; then eval "$prep"; fi
        run_one "$mode" "$cmd"
        if ((i == 0)); then
            FIRST[$key]=$REPLY
            # A command of a few milliseconds is at the mercy of the scheduler: more runs.
            if ((warm > 0 && REPLY < FAST_US && runs < FAST_RUNS)); then
                runs=$FAST_RUNS
                log "  under $(fmt_us "$FAST_US"): $runs timed runs"
            fi
        fi
        if ((i >= warm)); then samples+=("$REPLY"); fi
    done
    MED[$key]=$(median_of "${samples[@]}")
    printf '%s\t%s\t%s\t%s\n' "$key" "${FIRST[$key]}" "${samples[*]}" "$cmd" >>"$RAW"
    log "  median $(fmt_us "${MED[$key]}")  (first ${FIRST[$key]} µs; samples µs: ${samples[*]})"
}

# median_of SAMPLES...: the median (mean of the middle two for an even count)
median_of() {
    printf '%s\n' "$@" | sort -n |
        awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}

# measure_pair KEY_A CMD_A PREP_A KEY_B CMD_B PREP_B: like `measure wall 1 RUNS` for two
# commands whose ratio is the point, run alternately (A B B A A B …) after one warm-up
# each, so that the machine speeding up or slowing down during the runs moves both alike,
# and neither always runs right after the other.
measure_pair() {
    local ka=$1 ca=$2 pa=$3 kb=$4 cb=$5 pb=$6 i runs=$RUNS sa=() sb=()
    log "$ka: $ca  /  $kb: $cb  (1 warm-up each + alternating runs)"
    if [[ -n $pa ]]; then eval "$pa"; fi
    run_one wall "$ca"
    FIRST[$ka]=$REPLY
    if [[ -n $pb ]]; then eval "$pb"; fi
    run_one wall "$cb"
    FIRST[$kb]=$REPLY
    if ((FIRST[$ka] < FAST_US && FIRST[$kb] < FAST_US && runs < FAST_RUNS)); then
        runs=$FAST_RUNS
        log "  under $(fmt_us "$FAST_US"): $runs timed runs"
    fi
    for ((i = 0; i < 2 * runs; i++)); do
        if (((i + i / 2) % 2 == 0)); then # A, B, B, A, A, B, B, A, …
            if [[ -n $pa ]]; then eval "$pa"; fi
            run_one wall "$ca"
            sa+=("$REPLY")
        else
            if [[ -n $pb ]]; then eval "$pb"; fi
            run_one wall "$cb"
            sb+=("$REPLY")
        fi
    done
    MED[$ka]=$(median_of "${sa[@]}")
    MED[$kb]=$(median_of "${sb[@]}")
    # two rows: printf repeats its format for the second four arguments
    printf '%s\t%s\t%s\t%s\n' "$ka" "${FIRST[$ka]}" "${sa[*]}" "$ca" "$kb" "${FIRST[$kb]}" "${sb[*]}" "$cb" >>"$RAW"
    log "  $ka median $(fmt_us "${MED[$ka]}")  (first ${FIRST[$ka]} µs; samples µs: ${sa[*]})"
    log "  $kb median $(fmt_us "${MED[$kb]}")  (first ${FIRST[$kb]} µs; samples µs: ${sb[*]})"
}

fmt_us() {  # microseconds -> "123 µs" / "12.3 ms" / "1.234 s"
    awk -v u="$1" 'BEGIN {
        if (u < 1000) printf "%d µs", u
        else if (u < 1e6) printf "%.1f ms", u / 1e3
        else printf "%.3f s", u / 1e6 }'
}
gbps() { awk -v b="$1" -v u="$2" 'BEGIN { printf "%.2f GB/s", b / (u / 1e6) / 1e9 }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# check VALUE OP LIMIT -> yes / **no**
check() {
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        ok = (op == ">=") ? (v >= l) : (v <= l); print ok ? "yes" : "**no**" }'
}

ROWS=()
row() { local IFS=$'\t'; ROWS+=("$*"); }

tape_info() {
    local tree=$1 json
    json=$("$TT" info "$tree" --catalog "$CAT/$tree.db" --json 2>>"$CMDLOG") || die "tartape info $tree failed"
    TAPE[$tree]=$("$PY" "$HELPER" json total_size <<<"$json") || die "no total_size in: $json"
    NENT[$tree]=$("$PY" "$HELPER" json entry_count <<<"$json" 2>/dev/null || echo '?')
    [[ ${TAPE[$tree]} =~ ^[0-9]+$ ]] || die "bad total_size for $tree: ${TAPE[$tree]}"
}

# ---------------------------------------------------------------- the measures
bench_record() {
    local tree=$1 t py fnd
    measure_pair "record.$tree.tartape" \
        "\"\$TT\" record $tree --catalog \"\$CAT/$tree.db\" --force >/dev/null 2>>\"\$CMDLOG\"" "" \
        "record.$tree.find" "find $tree -printf '%s %T@ %m %p\n' >/dev/null" ""
    t=${MED[record.$tree.tartape]} fnd=${MED[record.$tree.find]}
    if [[ $tree == million && ${BENCH_SKIP_PY_MILLION:-0} == 1 ]]; then
        row "record $tree vs Python" "$(fmt_us "$t")" "skipped (BENCH_SKIP_PY_MILLION=1)" "—" "≥ 15×" "—"
    else
        if [[ $tree == million ]]; then
            measure "record.$tree.python" wall 0 1 "\"\$PY\" \"\$HELPER\" record $tree \"\$CAT/$tree.py.tartape\" >/dev/null 2>>\"\$CMDLOG\""
        else
            measure "record.$tree.python" wall 1 "$RUNS" "\"\$PY\" \"\$HELPER\" record $tree \"\$CAT/$tree.py.tartape\" >/dev/null 2>>\"\$CMDLOG\""
        fi
        py=${MED[record.$tree.python]}
        row "record $tree vs Python" "$(fmt_us "$t")" "Python $(fmt_us "$py")" "$(div "$py" "$t")×" "≥ 15×" \
            "$(check "$(div "$py" "$t")" ">=" 15)"
    fi
    row "record $tree vs find" "$(fmt_us "$t")" "find $(fmt_us "$fnd")" "$(div "$t" "$fnd")×" "≤ 2×" \
        "$(check "$(div "$t" "$fnd")" "<=" 2)"
    if [[ $tree == million ]]; then
        row "record $tree, time" "$(fmt_us "$t")" "—" "—" "≤ 10 s" "$(check "$t" "<=" 10000000)"
    fi
    tape_info "$tree"
}

# verify (every entry's metadata, walking the tree as record does) against record of the
# same tree, alternately
bench_verify() {
    local tree=$1 v r
    measure_pair "verify.$tree.tartape" \
        "\"\$TT\" verify $tree --catalog \"\$CAT/$tree.db\" >/dev/null 2>>\"\$CMDLOG\"" "" \
        "verify.$tree.record" \
        "\"\$TT\" record $tree --catalog \"\$CAT/$tree.db\" --force >/dev/null 2>>\"\$CMDLOG\"" ""
    v=${MED[verify.$tree.tartape]} r=${MED[verify.$tree.record]}
    row "verify $tree vs record" "$(fmt_us "$v")" "record $(fmt_us "$r")" "$(div "$v" "$r")×" "≤ 1.5×" \
        "$(check "$(div "$v" "$r")" "<=" 1.5)"
}

bench_stream() {
    local tree=$1 b t tr py
    b=${TAPE[$tree]}
    measure_pair "pipe.$tree.tartape" \
        "\"\$TT\" stream $tree --catalog \"\$CAT/$tree.db\" 2>>\"\$CMDLOG\" | cat >/dev/null" "" \
        "pipe.$tree.tar" "tar -cf - $tree 2>>\"\$CMDLOG\" | cat >/dev/null" ""
    measure "pipe.$tree.python" wall 1 "$RUNS" \
        "\"\$PY\" \"\$HELPER\" play $tree \"\$CAT/$tree.py.tartape\" 2>>\"\$CMDLOG\" | cat >/dev/null"
    t=${MED[pipe.$tree.tartape]} tr=${MED[pipe.$tree.tar]} py=${MED[pipe.$tree.python]}
    row "stream $tree \\| cat vs tar" "$(fmt_us "$t") ($(gbps "$b" "$t"))" "tar $(fmt_us "$tr") ($(gbps "$b" "$tr"))" \
        "$(div "$tr" "$t")×" "≥ 1×" "$(check "$(div "$tr" "$t")" ">=" 1)"
    row "stream $tree \\| cat vs Python play" "$(fmt_us "$t")" "Python $(fmt_us "$py") ($(gbps "$b" "$py"))" \
        "$(div "$py" "$t")×" "—" "—"

    measure_pair "file.$tree.tartape" \
        "\"\$TT\" stream $tree --catalog \"\$CAT/$tree.db\" -o \"\$WORKDIR/out.tar\" 2>>\"\$CMDLOG\"" \
        "rm -f -- \"\$WORKDIR/out.tar\"" \
        "file.$tree.tar" "tar -cf \"\$WORKDIR/out.tar\" $tree 2>>\"\$CMDLOG\"" \
        "rm -f -- \"\$WORKDIR/out.tar\""
    rm -f -- "$WORKDIR/out.tar"
    t=${MED[file.$tree.tartape]} tr=${MED[file.$tree.tar]}
    row "stream $tree -o FILE vs tar -cf FILE" "$(fmt_us "$t") ($(gbps "$b" "$t"))" \
        "tar $(fmt_us "$tr") ($(gbps "$b" "$tr"))" "$(div "$tr" "$t")×" "≥ 1×" "$(check "$(div "$tr" "$t")" ">=" 1)"
}

MOUNT_OUT=$WORKDIR/mount.out
# mount_cmd TREE MNT [ARGS...]: the command string that mounts TREE at MNT
mount_cmd() {
    local tree=$1 mnt=$2
    shift 2
    # shellcheck disable=SC2016 # expanded later, by eval
    printf '"$TT" mount %s %q --catalog "$CAT/%s.db" %s >"$MOUNT_OUT" 2>&1' "$tree" "$mnt" "$tree" "$*"
}

# after_mount MNT [--no-read]: check archive.tar reads (or, with --no-read, that it is
# there: reading would start the kernel's readahead), remember the server's pid in
# SERVER_PID
after_mount() {
    local mnt=$1
    note_server "$mnt"
    if [[ ${2:-} == --no-read ]]; then
        [[ -f $mnt/archive.tar ]] || die "$mnt/archive.tar is missing after mount"
    else
        head -c 1 -- "$mnt/archive.tar" >/dev/null || die "$mnt/archive.tar is not readable after mount"
    fi
}

# note_server MNT: find the pid of the process serving MNT (the `pid: N` line of the
# mount's output, else a read-only scan of /proc for a command line naming MNT)
note_server() {
    local mnt=$1 p
    [[ -f $MOUNT_OUT ]] || return 0
    cat -- "$MOUNT_OUT" >>"$CMDLOG"
    SERVER_PID=$(grep -oE 'pid: *[0-9]+' -- "$MOUNT_OUT" | tail -n 1 | grep -oE '[0-9]+' || true)
    if [[ -z $SERVER_PID || ! -d /proc/$SERVER_PID ]]; then
        SERVER_PID=
        for p in /proc/[0-9]*; do  # read-only scan: a process whose command line names $mnt
            [[ ${p#/proc/} == "$$" ]] && continue
            if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$mnt" &&
                tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q tartape; then
                SERVER_PID=${p#/proc/}
            fi
        done
    fi
    if [[ -n $SERVER_PID ]]; then SERVERS+=("$SERVER_PID $mnt"); fi
    rm -f -- "$MOUNT_OUT"
}

prepare_mountpoint() {
    local mnt=$1
    unmount "$mnt" || die "cannot unmount stale $mnt"
    mkdir -p -- "$mnt"
    [[ -z $(ls -A -- "$mnt") ]] || die "mount point $mnt is not empty"
    MOUNTS+=("$mnt")
}

bench_mount_read() {
    local tree=$1 mnt b t c
    mnt=$WORKDIR/mnt/$tree
    b=${TAPE[$tree]}
    prepare_mountpoint "$mnt"
    run_one wall "$(mount_cmd "$tree" "$mnt")"
    after_mount "$mnt"
    # first run (cold page cache of the mount) is the warm-up; then warm medians
    measure "mount.$tree.cat" wall 1 "$RUNS" "cat \"$mnt/archive.tar\" >/dev/null"
    measure "mount.$tree.stream" wall 1 "$RUNS" \
        "\"\$TT\" stream $tree --catalog \"\$CAT/$tree.db\" 2>>\"\$CMDLOG\" >/dev/null"
    unmount "$mnt" || die "cannot unmount $mnt"
    c=${MED[mount.$tree.cat]} t=${MED[mount.$tree.stream]}
    row "mount: cat archive.tar ($tree) vs stream" "$(fmt_us "$c") ($(gbps "$b" "$c"); first read after mount $(gbps "$b" "${FIRST[mount.$tree.cat]}"))" \
        "stream $(fmt_us "$t") ($(gbps "$b" "$t"))" "$(div "$t" "$c")×" "≥ 0.5×" "$(check "$(div "$t" "$c")" ">=" 0.5)"
    if [[ $tree == large ]]; then
        row "mount: cat archive.tar ($tree), warm" "$(gbps "$b" "$c")" "—" "—" "≥ 1 GB/s" \
            "$(check "$(awk -v b="$b" -v u="$c" 'BEGIN { print b / u / 1e3 }')" ">=" 1)"
    fi
    # The rows above follow the protocol (medians after a warm-up), so the kernel serves
    # those reads from archive.tar's page cache. These go through the server every time:
    # a fresh mount before each timed `cat` (the source's page cache stays warm), with the
    # default page cache and with --direct-io.
    local mode key
    for mode in "" --direct-io; do
        key=mount.$tree.fresh$mode
        measure "$key" wall 0 "$RUNS" "cat \"$mnt/archive.tar\" >/dev/null" \
            "remount \"$tree\" \"$mnt\" $mode"
        unmount "$mnt" || die "cannot unmount $mnt"
        c=${MED[$key]}
        row "mount${mode:+ $mode}: first cat after mounting ($tree) vs stream" \
            "$(fmt_us "$c") ($(gbps "$b" "$c"))" "stream $(fmt_us "$t") ($(gbps "$b" "$t"))" \
            "$(div "$t" "$c")×" "— (see note)" "—"
    done
}

# remount TREE MNT [ARGS...]: unmount MNT if mounted, mount TREE there afresh
remount() {
    local tree=$1 mnt=$2
    shift 2
    unmount "$mnt" || die "cannot unmount $mnt"
    run_one wall "$(mount_cmd "$tree" "$mnt" "$@")"
    after_mount "$mnt" --no-read
}

bench_mount_million() {
    local tree=million mnt=$WORKDIR/mnt/million t rss0 rss1='' hwm='' rr med p99 mean max n
    prepare_mountpoint "$mnt"
    # The default check (full: every entry, as `verify` does), then --verify quick.
    measure "mount.$tree.full" wall 1 "$RUNS" "$(mount_cmd "$tree" "$mnt")" \
        "note_server \"$mnt\"; unmount \"$mnt\" || die \"cannot unmount $mnt\""
    note_server "$mnt"
    unmount "$mnt" || die "cannot unmount $mnt"
    t=${MED[mount.$tree.full]}
    row "mount $tree (default --verify full): ready" "$(fmt_us "$t")" "—" "—" "≤ 2.5 s" "$(check "$t" "<=" 2500000)"
    measure "mount.$tree.time" wall 1 "$RUNS" "$(mount_cmd "$tree" "$mnt" --verify quick)" \
        "note_server \"$mnt\"; unmount \"$mnt\" || die \"cannot unmount $mnt\""
    after_mount "$mnt"
    t=${MED[mount.$tree.time]}
    row "mount $tree (--verify quick): ready" "$(fmt_us "$t")" "—" "—" "≤ 2 s" "$(check "$t" "<=" 2000000)"

    rss0=$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || true)
    log "random reads: $NREADS × 4 KiB over $mnt/archive.tar"
    rr=$("$PY" "$HELPER" randread "$mnt/archive.tar" "$NREADS" 2>>"$CMDLOG") || die "random reads failed"
    read -r med p99 mean max n <<<"$rr"
    printf 'randread.%s\t%s\t(median p99 mean max n, µs)\n' "$tree" "$rr" >>"$RAW"
    row "random 4 KiB reads, $tree mount ($n)" "median $(fmt_us "$med")" "p99 $(fmt_us "$p99"), mean $(fmt_us "$mean"), max $(fmt_us "$max")" \
        "—" "median ≤ 1 ms" "$(check "$med" "<=" 1000)"

    if [[ -n $SERVER_PID ]]; then
        hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || true)
        rss1=$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || true)
    fi
    if [[ -n $hwm ]]; then
        printf 'rss.%s\tVmHWM %s kB, VmRSS before reads %s kB, after %s kB (pid %s)\n' \
            "$tree" "$hwm" "$rss0" "$rss1" "$SERVER_PID" >>"$RAW"
        row "mount $tree: server peak RSS (VmHWM)" "$(awk -v k="$hwm" 'BEGIN { printf "%.1f MiB", k / 1024 }')" \
            "$(awk -v a="$rss0" -v b="$rss1" 'BEGIN { printf "VmRSS %.1f → %.1f MiB over the reads", a / 1024, b / 1024 }')" \
            "—" "≤ 64 MiB" "$(check "$hwm" "<=" 65536)"
    else
        row "mount $tree: server peak RSS (VmHWM)" "not found (pid '$SERVER_PID')" "—" "—" "≤ 64 MiB" "**no**"
    fi
    unmount "$mnt" || die "cannot unmount $mnt"
}

bench_resume() {
    local tree=million off t
    off=$((TAPE[$tree] * 9 / 10))
    # SIGPIPE/EPIPE when head exits is expected: accept 141 from tartape
    measure "resume.$tree" wall 1 "$RUNS" \
        "{ \"\$TT\" stream $tree --catalog \"\$CAT/$tree.db\" --offset $off 2>>\"\$CMDLOG\" || [ \$? -eq 141 ]; } | head -c 1 >/dev/null"
    t=${MED[resume.$tree]}
    row "stream $tree --offset 90% \\| head -c 1" "$(fmt_us "$t")" "—" "—" "≤ 50 ms" "$(check "$t" "<=" 50000)"
}

# ---------------------------------------------------------------- main
main() {
    local start=$EPOCHREALTIME tree mount_ok=1 mount_why='' table
    mkdir -p -- "$CAT" "$(dirname -- "$REPORT")"
    : >"$CMDLOG"
    printf 'key\tfirst_run_us\tsamples_us\tcommand\n' >"$RAW"
    ensure_tools
    write_helper

    if [[ -n ${BENCH_TARTAPE:-} ]]; then
        TT=$(realpath -- "$BENCH_TARTAPE")
    else
        TT=${CARGO_TARGET_DIR:-$REPO/target}/release/tartape
        [[ $TT == /* ]] || TT=$REPO/$TT
        if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
            log "cargo build --release"
            (cd "$REPO" && cargo build --release) >>"$CMDLOG" 2>&1 || die "cargo build --release failed"
        fi
    fi
    [[ -x $TT ]] || die "no tartape binary at $TT"
    # The background mounts' logs stay under WORKDIR.
    mkdir -p -- "$WORKDIR/logs"
    export XDG_RUNTIME_DIR=$WORKDIR/logs XDG_STATE_HOME=$WORKDIR/logs
    export TT CAT CMDLOG WORKDIR PY HELPER MOUNT_OUT

    gen_tree small "$SMALL_N"
    gen_tree large "$LARGE_N" "$LARGE_MIB"
    gen_tree million "$MILLION_N"
    cd -- "$WORKDIR"

    for tree in small large million; do bench_record "$tree"; done
    for tree in small million; do bench_verify "$tree"; done
    for tree in small large; do bench_stream "$tree"; done

    if ! "$TT" mount --help >/dev/null 2>&1; then
        mount_ok=0 mount_why="\`tartape mount --help\` fails"
    elif [[ ! -e /dev/fuse ]]; then
        mount_ok=0 mount_why="no /dev/fuse"
    fi
    if ((mount_ok)); then
        for tree in small large; do bench_mount_read "$tree"; done
        bench_mount_million
    else
        row "mount: not available ($mount_why)" "—" "—" "—" "—" "—"
    fi
    bench_resume

    # shellcheck disable=SC2016 # backquotes below are Markdown
    {
        printf '# tartape benchmark%s\n\n' "$( ((QUICK)) && echo ' (--quick)')"
        printf -- '- date: %s; tartape %s; machine: %s cores, %s RAM, Linux %s\n' "$(date -u +%FT%TZ)" \
            "$(if [[ -n ${BENCH_TARTAPE:-} ]]; then echo "binary $TT"; else
                git -C "$REPO" describe --always --dirty 2>/dev/null || echo '(no commit)'; fi)" \
            "$(nproc)" "$(free -h | awk '/^Mem:/ { print $2 }')" "$(uname -r)"
        printf -- '- trees (under %s): ' "$WORKDIR"
        printf 'small %s files → tape %s B (%s entries); ' "$SMALL_N" "${TAPE[small]}" "${NENT[small]}"
        printf 'large %s × %s MiB → tape %s B; ' "$LARGE_N" "$LARGE_MIB" "${TAPE[large]}"
        printf 'million %s entries → tape %s B\n' "${NENT[million]}" "${TAPE[million]}"
        printf -- '- each time is the median of %s runs after 1 warm-up (%s runs when the warm-up took under 100 ms; Python record of the million tree: 1 run, no warm-up); record vs find and stream vs tar run alternately; page cache warm; raw samples in %s\n' "$RUNS" "$FAST_RUNS" "$RAW"
        printf -- '- ratios: record = Python/tartape and tartape/find; verify = verify/record (run alternately); stream = tar/tartape (≥ 1 means tartape is faster); mount = cat throughput / stream throughput\n'
        printf -- '- stream never splices pages of source files into the pipe (SPEC §3): every byte is read, checked after the read, then written (into a regular file with -o, large contents are copied by copy_file_range and checked after the copy); mount million: ready = `tartape mount` returned and archive.tar is readable, with the default full check and with --verify quick\n'
        printf -- '- Python tartape 3.0.3: `record` is timed as a whole process, like `tartape record` (`python bench_helper.py record`: start-up, import and the `tartape.record(DIR, catalog_path=…, exclude=[], overwrite=True)` call); play is the whole process `python bench_helper.py play` (`tartape.open(…).as_file()`, `read(1 MiB)` → stdout) `| cat >/dev/null`, like the other pipe rows\n'
        printf -- '- mount read: `cat MNT/archive.tar >/dev/null` (median of the warm runs; the first read after mounting is the warm-up, shown too) vs `tartape stream DIR >/dev/null`; "first cat after mounting": median of runs each on a fresh mount (archive.tar not in the page cache, the source is), default and `--direct-io`; no target of its own: the filling of fresh page-cache pages bounds it on a virtual machine; random reads: `os.pread` of aligned 4 KiB pages at distinct random offsets, POSIX_FADV_RANDOM, after 200 warm-up reads\n\n'
        printf '| measure | tartape | comparison | ratio | target | ok? |\n|---|---|---|---|---|---|\n'
        local r
        for r in "${ROWS[@]}"; do printf '| %s |\n' "${r//$'\t'/ | }"; done
        printf '\ntotal bench time: %s\n' "$(fmt_us $((${EPOCHREALTIME/./} - ${start/./})))"
    } >"$REPORT.tmp"
    mv -f -- "$REPORT.tmp" "$REPORT"
    table=$(<"$REPORT")
    printf '%s\n' "$table"
    log "report written to $REPORT"
}

main; exit
