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
    bench_helper.py httprand URL COUNT    COUNT GETs of random aligned 4 KiB ranges of URL
                                          on one keep-alive connection; prints
                                          "median_us p99_us mean_us max_us count"
    bench_helper.py httphold URL N idle|active READY SECONDS
                                          N connections to URL's server, idle (nothing
                                          sent) or active (each in the middle of a GET of
                                          URL, 1 MiB read); touches READY once they all
                                          are, holds them SECONDS, closes them
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
elif cmd == "httprand":  # httprand URL COUNT -> "median_us p99_us mean_us max_us count"
    import http.client, urllib.parse
    url, count = urllib.parse.urlsplit(sys.argv[2]), int(sys.argv[3])
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    c.request("HEAD", url.path)
    r = c.getresponse()
    r.read()
    size = int(r.getheader("Content-Length"))
    rng = random.Random(12345)
    lat = []
    for i in range(count + 100):
        a = rng.randrange(size // 4096) * 4096
        t0 = time.perf_counter_ns()
        c.request("GET", url.path, headers={"Range": "bytes=%d-%d" % (a, a + 4095)})
        r = c.getresponse()
        body = r.read()
        t = time.perf_counter_ns() - t0
        if r.status != 206 or len(body) != 4096:
            sys.exit("httprand: %d with %d bytes at %d" % (r.status, len(body), a))
        if i >= 100:  # the first 100: warm-up
            lat.append(t)
    lat.sort()
    n = len(lat)
    med = lat[n // 2] if n % 2 else (lat[n // 2 - 1] + lat[n // 2]) // 2
    p99 = lat[min(n - 1, (99 * n + 99) // 100 - 1)]
    print(med / 1000, p99 / 1000, sum(lat) / n / 1000, lat[-1] / 1000, n)
elif cmd == "httphold":  # httphold URL N idle|active READY SECONDS
    import socket, urllib.parse
    url, n, mode = urllib.parse.urlsplit(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    ready, seconds = sys.argv[5], float(sys.argv[6])
    conns = []
    for i in range(n):
        s = socket.create_connection((url.hostname, url.port), timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conns.append(s)
    if mode == "active":
        for s in conns:
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % url.path).encode())
        for s in conns:
            got = 0
            while got < (1 << 20):
                b = s.recv(1 << 16)
                if not b:
                    sys.exit("httphold: the server closed a connection")
                got += len(b)
    open(ready, "w").close()
    time.sleep(seconds)
    for s in conns:
        s.close()
else:
    sys.exit("bench_helper: unknown command " + cmd)
