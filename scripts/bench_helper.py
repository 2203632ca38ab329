#!/usr/bin/env python3
"""The Python side of scripts/bench.sh (run with the venv's python, tartape 3.0.3).

    bench_helper.py record DIR CATALOG   tartape.record(); prints its own time in µs
                                          (bench.sh times the whole process instead)
    bench_helper.py play DIR CATALOG     the whole tape to stdout, as `tartape stream`
    bench_helper.py randread FILE COUNT  COUNT random 4 KiB preads; prints
                                          "median_us p99_us mean_us max_us count"
    bench_helper.py json KEY < OBJECT    one key of a JSON object
    bench_helper.py located-file < LOCATE_JSON
                                          the path of the entry `tartape locate --offset N
                                          --json` names when it is a file (else nothing)
    bench_helper.py volume-names < LOCATE_JSON
                                          the names of the volumes holding the entry's
                                          header and content (`locate PATH --volume-size
                                          S --json`), one per line
"""
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
elif cmd == "maxrss":  # maxrss CMD... : run CMD (stdout to /dev/null); its peak RSS in kB
    import resource, subprocess
    rc = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL).returncode
    if rc != 0:
        sys.exit("maxrss: %s exited with %d" % (sys.argv[2], rc))
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
elif cmd == "json":  # json KEY < object
    import json
    print(json.load(sys.stdin)[sys.argv[2]])
elif cmd == "located-file":  # located-file < locate --offset N --json
    import json
    entry = json.load(sys.stdin).get("entry") or {}
    if entry.get("kind") == "file" and entry.get("size", 0) > 0:
        print(entry["path"])
elif cmd == "volume-names":  # volume-names < locate PATH --volume-size S --json
    import json
    located = json.load(sys.stdin)
    names = []
    for s in located["header_slices"] + located["slices"]:
        if s["name"] not in names:
            names.append(s["name"])
    print("\n".join(names))
else:
    sys.exit("bench_helper: unknown command " + cmd)
