#!/usr/bin/env bash
# A short smoke run of the benchmark harness, so that it cannot rot (scripts/test runs it).
# Not a timed test: it only checks that bench/run.sh runs every kind of workload against
# both registries without errors and writes its report, chart and records.
#
#   bash bench/smoke.sh              # run into a new temporary directory (removed), check
#   bash bench/smoke.sh --check DIR  # only check what a run left in DIR (BENCH_OUT, with the
#                                    # --publish files in DIR/docs)
#
# The run: bench/run.sh --quick --rounds 1 --startup-rounds 1 --publish, smaller sizes still,
# and one workload of each kind: the machine's limits, pushes (monolithic, chunked), a
# pull, small blobs, a manifest GET (also on berth-auth), a catalog and a tags listing,
# skopeo push and pull, a web UI page, garbage collection, start-up. With BERTH_TEST_S3_*
# set (scripts/test sets them), berth-s3 runs its push, pull and small-blob lines too.
#
# The check: results.jsonl has a line for every (workload, registry) expected, every line
# without errors and with something measured; report.md has the comparison table with a
# line per workload, the targets table, no errors section, and links the chart;
# ratios.svg is well-formed XML with one bar per comparison line; the published
# benchmarks.md says it is a quick smoke run and links benchmarks.svg, which parses, and
# benchmarks.json holds every record as one array. Then it checks itself: the same results
# with one error in them must fail.
#
# Environment: BERTH_BIN (the berth binary to measure; without it run.sh builds one),
# CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

machine=sha256,sha256-openssl,disk-write,fsync-4k,loopback-get,loopback-put
registry=push-mono,push-chunked,pull,small-push-c8,small-get-c8,manifest-tag-c64,catalog-first,tags-first,skopeo-push,skopeo-pull,ui-images-first,gc

check() { # DIR
  python3 - "$1" "$machine" "$registry" "${BERTH_TEST_S3_ENDPOINT:+berth-s3}" <<'EOF'
import json, os, sys
import xml.dom.minidom

out, machine, registry, s3 = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4]
problems = []

def read(name):
    with open(os.path.join(out, name), encoding="utf-8") as f:
        return f.read()

records = [json.loads(l) for l in read("results.jsonl").splitlines() if l.strip()]

# What must be there: (workload, registry).
S3_LINES = {"push-mono", "push-chunked", "pull", "pull-ranged", "small-push-c8", "small-get-c8"}
expected = {(w, "machine") for w in machine}
for w in registry:
    regs = ["berth"] if w.startswith("ui-") else ["berth", "distribution"]
    if w.startswith("manifest-"):
        regs.append("berth-auth")
    if s3 and w in S3_LINES:
        regs.append("berth-s3")
    expected |= {(w, r) for r in regs}
both = ["startup", "seed-mounts", "seed-tags"]
if "gc" in registry:
    both += ["seed-gc", "gc-delete"]  # gc's set-up: its images pushed, then half deleted
expected |= {(w, r) for w in both for r in ("berth", "distribution")}

seen = {}
for r in records:
    seen.setdefault((r["workload"], r["registry"]), []).append(r)
for key in sorted(expected - seen.keys()):
    problems.append(f"no result for {key[0]} on {key[1]}")
for key, rs in sorted(seen.items()):
    for r in rs:
        if r["errors"]:
            problems.append(f"{key[0]} on {key[1]}: {r['errors']} error(s): {r.get('note')}")
        elif key[0] == "startup":
            if not (r["seconds"] > 0 and r.get("rss_kib")):
                problems.append(f"startup on {key[1]}: nothing measured")
        elif not (r["ops"] > 0 and r["seconds"] > 0 and (r["mb_per_s"] > 0 or r["ops_per_s"] > 0)):
            problems.append(f"{key[0]} on {key[1]}: nothing measured ({r})")

# The comparison lines the report and the chart must show.
def throughput(w):
    return w.startswith(("push-", "pull", "skopeo-"))
compared = sorted({w for (w, r) in expected if r == "distribution"} - {"startup", "seed-mounts", "seed-tags", "seed-gc"})
bars = 3  # start-up: time to first answer, idle RSS, idle private memory (RssAnon)
for w in compared:
    per = 1 if throughput(w) else 3
    bars += per * sum(1 for (x, r) in expected if x == w and r != "distribution")

report = read("report.md")
for needle in ["| workload | metric | berth | distribution | ratio berth/distribution | better |",
               "### Targets of issue 8", "](ratios.svg)", "- machine: ", "- mode: quick smoke run"]:
    if needle not in report:
        problems.append(f"report.md lacks {needle!r}")
for w in compared:
    if f"\n| {w} | " not in report:
        problems.append(f"report.md has no line for {w}")
if "### Errors" in report:
    problems.append("report.md has an errors section")

def svg_bars(name):
    try:
        doc = xml.dom.minidom.parseString(read(name).encode("utf-8"))
    except Exception as e:
        problems.append(f"{name} is not well-formed XML: {e}")
        return None
    return sum(1 for e in doc.getElementsByTagName("rect") if e.getAttribute("class") == "bar")
n = svg_bars("ratios.svg")
if n is not None and n != bars:
    problems.append(f"ratios.svg has {n} bars, not {bars} (one per comparison line)")

docs = os.path.join(out, "docs")
page = read("docs/benchmarks.md")
for needle in ["Quick smoke run, not a measurement", "](benchmarks.svg)", "](../bench/README.md)",
               "| workload | metric | berth | distribution |"]:
    if needle not in page:
        problems.append(f"docs/benchmarks.md lacks {needle!r}")
if svg_bars("docs/benchmarks.svg") != bars:
    problems.append("docs/benchmarks.svg differs from ratios.svg in its bars")
published = json.loads(read("docs/benchmarks.json"))
if published != records:
    problems.append(f"docs/benchmarks.json: {len(published)} records, not the {len(records)} of results.jsonl")

if problems:
    print("bench smoke: FAILED", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"bench smoke: ok: {len(records)} records, {len(expected)} (workload, registry) pairs, "
      f"{bars} bars in the chart, report and published page in place")
EOF
}

if [ "${1:-}" = --check ]; then
  check "${2:?--check DIR}"
  exit
fi

dir=$(mktemp -d /tmp/berth-bench-smoke.XXXXXX)
trap 'rm -rf "$dir"' EXIT
start=$(date +%s)
BENCH_OUT=$dir BENCH_PUBLISH_DIR=$dir/docs bash bench/run.sh --quick --rounds 1 --startup-rounds 1 \
  --publish --workloads "$machine,$registry" \
  --small-count 50 --duration 0.3 --catalog-repos 200 --catalog-tags 50 \
  --skopeo-layers 2 --gc-images 20 >"$dir/run.log" 2>&1 || {
  tail -n 40 "$dir/run.log" >&2
  echo "bench smoke: bench/run.sh failed (its last lines above)" >&2
  exit 1
}
echo "bench smoke: bench/run.sh took $(( $(date +%s) - start ))s"
check "$dir"

# The check must be able to fail: the same results with one error in them.
mkdir -p "$dir/bad"
cp -r "$dir/docs" "$dir/report.md" "$dir/ratios.svg" "$dir/bad/"
python3 -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
r = json.loads(lines[-1]); r["errors"] = 1
lines[-1] = json.dumps(r)
open(sys.argv[2], "w").write("\n".join(lines) + "\n")' "$dir/results.jsonl" "$dir/bad/results.jsonl"
if check "$dir/bad" 2>/dev/null; then
  echo "bench smoke: the check passed results with an error in them" >&2
  exit 1
fi
