#!/usr/bin/env bash
# Benchmarks Berth side by side with the CNCF distribution registry on this machine.
#
#   bash bench/run.sh              # full run (5 rounds, 1 GiB blob, 100,000 repos): 15-22 min
#   bash bench/run.sh --quick      # smoke run (2 rounds, small sizes): ~2 min once built
#   bash bench/run.sh --publish    # full run, then docs/benchmarks.{md,svg,json}
#
# With BERTH_TEST_S3_* set (`. DIR/env` after tests/services/start.sh DIR), a third Berth
# with its blobs in that S3 server runs the push, pull and small-blob workloads too.
#
# Options: --rounds N, --workloads LIST (see `berth-bench list`), --startup-rounds N,
#          --keep (keep the scratch directory), --publish (also write the report, chart and
#          records to docs/benchmarks.md, .svg, .json), any other --flag is passed to
#          `berth-bench run` (e.g. --blob-mib 256 --duration 1).
# Environment: BENCH_WORK (scratch dir, default a new /var/tmp/berth-bench.XXXXXX),
#          BENCH_OUT (results dir, default bench/out), BENCH_PUBLISH_DIR (where --publish
#          writes, default docs), BERTH_BIN (use this berth binary instead of building one)
#          and BERTH_DESC (how the report names it), CARGO_TARGET_DIR.
#
# It builds Berth in release mode, starts it (--no-auth) and distribution
# (../shared/peers/distribution.sh) on loopback ports, plus a second Berth with auth on for
# the manifest GETs with bearer tokens, measures the machine's limits and runs every
# workload against them, alternating, for several rounds, then
# restarts each several times to time start-up, and writes into bench/out the raw JSON
# lines (results.jsonl), the report (report.md: machine, date, commit, tables) and the
# chart of the ratios it shows (ratios.svg). Method: bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

command="bash bench/run.sh $*"
quick=0; rounds=""; startup_rounds=""; workloads=all; keep=0; publish=0; extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --startup-rounds) startup_rounds=$2; shift ;;
    --workloads) workloads=$2; shift ;;
    --keep) keep=1 ;;
    --publish) publish=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    --*) extra+=("$1" "$2"); shift ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ $quick = 1 ]; then
  rounds=${rounds:-2}; startup_rounds=${startup_rounds:-2}; extra+=(--quick)
else
  rounds=${rounds:-5}; startup_rounds=${startup_rounds:-5}
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/berth-target}
echo "== building (release)" >&2
if [ -z "${BERTH_BIN:-}" ]; then
  # Berth alone, as users build it (the bench crate would otherwise add hyper's client
  # features to the binary under test).
  cargo build --release --quiet --locked -p berth
  BERTH_BIN=$CARGO_TARGET_DIR/release/berth
fi
cargo build --release --quiet --locked -p berth-bench
bench=$CARGO_TARGET_DIR/release/berth-bench
if [ -n "${BERTH_DESC:-}" ]; then
  berth_desc=$BERTH_DESC
elif [ "$BERTH_BIN" = "$CARGO_TARGET_DIR/release/berth" ]; then
  berth_desc="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo ' + uncommitted changes')"
else
  berth_desc="binary $BERTH_BIN"
fi
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates bench Cargo.toml Cargo.lock || echo ' + uncommitted changes')"
peer=$repo/../shared/peers/distribution.sh

work=${BENCH_WORK:-$(mktemp -d /var/tmp/berth-bench.XXXXXX)}
out=${BENCH_OUT:-$repo/bench/out}
mkdir -p "$work" "$out"
results=$out/results.jsonl
report=$out/report.md
chart=$out/ratios.svg
: >"$results"

ports=()
while [ ${#ports[@]} -lt 4 ]; do
  p=$("$bench" free-port)
  case " ${ports[*]} " in *" $p "*) ;; *) ports+=("$p") ;; esac
done
bport=${ports[0]}; dport=${ports[1]}; aport=${ports[2]}; sport=${ports[3]}
burl=http://127.0.0.1:$bport
durl=http://127.0.0.1:$dport
aurl=http://127.0.0.1:$aport
surl=http://127.0.0.1:$sport
sdata=$work/berth-s3-data
bdata=$work/berth-data
ddata=$work/dist-data
adata=$work/berth-auth-data
apass=bench-password-$$-$RANDOM

bpid=""; dpid=""; apid=""; spid=""
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null || true
  [ -n "$bpid" ] && kill "$bpid" 2>/dev/null || true
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null || true
  [ -n "$apid" ] && kill "$apid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ $keep = 0 ] && [ -z "${BENCH_WORK:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

wait_for() { # URL
  for _ in $(seq 300); do
    curl -fs -o /dev/null "$1/v2/" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2; return 1
}

start_berth() {
  "$BERTH_BIN" serve --no-auth --listen "127.0.0.1:$bport" --data-dir "$bdata" 2>>"$work/berth.log" &
  bpid=$!
  wait_for "$burl"
}
# A second Berth with auth on (bearer tokens) for the manifest GETs with auth, if this
# build has users.
start_berth_auth() {
  printf '%s\n' "$apass" | "$BERTH_BIN" --data-dir "$adata" user add bench --admin --password-stdin >/dev/null
  "$BERTH_BIN" serve --listen "127.0.0.1:$aport" --data-dir "$adata" 2>>"$work/berth-auth.log" &
  apid=$!
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$aurl/v2/")" = 401 ] && return 0
    sleep 0.05
  done
  echo "berth with auth did not start; see $work/berth-auth.log" >&2; return 1
}
# A third Berth with its blobs in S3 (the server of BERTH_TEST_S3_*, e.g. Garage from
# tests/services/start.sh), for the throughput lines: the S3 store next to the
# filesystem one, on the same machine in the same run.
start_berth_s3() {
  BERTH_STORAGE__BACKEND=s3 BERTH_STORAGE__S3__ENDPOINT=$BERTH_TEST_S3_ENDPOINT \
  BERTH_STORAGE__S3__REGION=$BERTH_TEST_S3_REGION BERTH_STORAGE__S3__BUCKET=$BERTH_TEST_S3_BUCKET \
  BERTH_STORAGE__S3__ACCESS_KEY_ID=$BERTH_TEST_S3_ACCESS_KEY_ID \
  BERTH_STORAGE__S3__SECRET_ACCESS_KEY=$BERTH_TEST_S3_SECRET_ACCESS_KEY \
  BERTH_STORAGE__S3__PREFIX=bench-$$-$RANDOM \
    "$BERTH_BIN" serve --no-auth --listen "127.0.0.1:$sport" --data-dir "$sdata" 2>>"$work/berth-s3.log" &
  spid=$!
  wait_for "$surl"
}
start_dist() {
  dpid=$(bash "$peer" start "127.0.0.1:$dport" "$ddata")
}
stop() { # PID
  kill "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
}

echo "== starting berth on $burl and distribution on $durl (scratch: $work)" >&2
start_berth
start_dist
auth_args=()
if "$BERTH_BIN" user --help >/dev/null 2>&1; then
  echo "== starting berth with auth on $aurl (manifest GETs with bearer tokens)" >&2
  start_berth_auth
  auth_args=(--target "berth-auth=$aurl" --pid "berth-auth=$apid" --auth "berth-auth=bench:$apass"
             --only "berth-auth=manifest-tag-c64,manifest-digest-c64")
else
  echo "== this berth has no users: no auth-on line" >&2
fi

s3_args=()
if [ -n "${BERTH_TEST_S3_ENDPOINT:-}" ]; then
  echo "== starting berth on S3 ($BERTH_TEST_S3_ENDPOINT) on $surl" >&2
  start_berth_s3
  s3_args=(--target "berth-s3=$surl" --pid "berth-s3=$spid"
           --only "berth-s3=push-mono,push-chunked,pull,pull-ranged,small-push-c8,small-get-c8")
else
  echo "== BERTH_TEST_S3_ENDPOINT not set: no S3 line (source the env of tests/services/start.sh)" >&2
fi

echo "== run: $rounds rounds, workloads: $workloads" >&2
started=$(date +%s)
"$bench" run \
  --target "berth=$burl" --target "distribution=$durl" \
  --pid "berth=$bpid" --pid "distribution=$dpid" \
  --data-dir "berth=$bdata" --data-dir "distribution=$ddata" \
  "${auth_args[@]}" "${s3_args[@]}" \
  --gc-cmd "berth=$BERTH_BIN gc --grace-period 0s --data-dir $bdata" \
  --gc-cmd "distribution=docker-registry garbage-collect $ddata/config.yml" \
  --workloads "$workloads" --rounds "$rounds" --work "$work" --out "$results" \
  "${extra[@]}" >/dev/null

echo "== start-up: $startup_rounds rounds, existing data directories" >&2
stop "$bpid"; bpid=""
stop "$dpid"; dpid=""
if [ -n "$apid" ]; then stop "$apid"; apid=""; fi
if [ -n "$spid" ]; then stop "$spid"; spid=""; fi
for r in $(seq "$startup_rounds"); do
  order="berth distribution"
  [ $((r % 2)) = 0 ] && order="distribution berth"
  for reg in $order; do
    if [ $reg = berth ]; then
      "$bench" startup --registry berth --url "$burl" --round "$r" --out "$results" \
        --log "$work/berth-startup.log" -- \
        "$BERTH_BIN" serve --no-auth --listen "127.0.0.1:$bport" --data-dir "$bdata" >/dev/null
    else
      "$bench" startup --registry distribution --url "$durl" --round "$r" --out "$results" \
        --log "$work/dist-startup.log" -- \
        docker-registry serve "$ddata/config.yml" >/dev/null
    fi
  done
done
elapsed=$(( $(date +%s) - started ))

disk_dev=$(df --output=source "$work" | tail -1)
date=$(date -u '+%Y-%m-%d %H:%M UTC')
n_of() { if [ "$1" = 1 ]; then echo "1 $2"; else echo "$1 ${2}s"; fi; } # COUNT NOUN
if [ $quick = 1 ]; then
  mode="quick smoke run (--quick: small sizes), $(n_of "$rounds" round)"
else
  mode="full run, $(n_of "$rounds" round)"
fi
header=$work/header.md
{
  echo "## Berth vs distribution — $date"
  echo
  echo "- mode: $mode, $(n_of "$startup_rounds" "start-up round"), ${elapsed} s in all$([ $quick = 1 ] && echo ': it checks that everything runs; its figures are too short to quote')"
  echo "- command: \`$command\`, commit $commit"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
       "SHA-NI: $(grep -q -w sha_ni /proc/cpuinfo && echo yes || echo no)," \
       "$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo) GiB RAM, kernel $(uname -r)"
  echo "- disk: $disk_dev ($(df --output=fstype "$work" | tail -1)," \
       "lsblk ROTA=$(lsblk -dno ROTA "$disk_dev" 2>/dev/null | xargs))," \
       "scratch and data directories in $work"
  echo "- berth: $berth_desc, release build, --no-auth, default config (log level info);" \
       "berth-auth: the same binary with auth on (bearer tokens), manifest GETs only"
  if grep -q berth-s3 "$results"; then
    echo "- berth-s3: the same binary with its blobs in S3 ($BERTH_TEST_S3_ENDPOINT:" \
         "$("${GARAGE_BIN:-$HOME/.cache/berth-ci/tools/bin/garage}" --version 2>/dev/null | head -1 || echo an S3 server)" \
         "on the same machine), SQLite metadata; push, pull and small-blob lines only"
  fi
  echo "- distribution: $(docker-registry --version 2>/dev/null | awk '{print $3}'), filesystem storage, in-memory blob descriptor cache, log level error, access log off (../shared/peers/distribution.sh)"
  echo "- skopeo $(skopeo --version 2>/dev/null | awk '{print $3}'), openssl $(openssl version | awk '{print $2}')"
  echo
} >"$header"
tables=$work/tables.md
"$bench" report "$results" --svg "$chart" --json "$work/results.json" \
  --svg-caption "$date · $mode · berth $berth_desc · $(nproc) cores" >"$tables"
# The chart goes between the machine and the tables; IMAGE is its path from the page.
page() { # IMAGE
  cat "$header"
  echo "![Berth ÷ distribution on every line, log scale: right of 1× Berth is better, left distribution]($1)"
  echo
  cat "$tables"
}
page ratios.svg >"$report"
cat "$report"
echo >&2
echo "report: $report   chart: $chart   raw: $results" >&2

if [ $publish = 1 ]; then
  docs=${BENCH_PUBLISH_DIR:-$repo/docs}
  mkdir -p "$docs"
  {
    echo "# Benchmarks: Berth side by side with the CNCF distribution registry"
    echo
    if [ $quick = 1 ]; then
      echo "> **Quick smoke run, not a measurement.** Made by \`$command\`: $(n_of "$rounds" round) of the"
      echo "> quick mode's small sizes ([bench/README.md](../bench/README.md), \"Quick mode\"). It shows that the harness runs"
      echo "> and what this page looks like; its figures are too short to quote. A full run"
      echo "> (\`bash bench/run.sh --publish\`) replaces it."
    else
      echo "> Full run: \`$command\` ($rounds alternating rounds; the full sizes of bench/README.md,"
      echo "> 1 GiB blob, 1,000 small blobs, 100,000 repositories, 10,000 tags, unless the command"
      echo "> overrides them)."
    fi
    echo
    echo "**Method** (in full, with every workload and the caveats: [bench/README.md](../bench/README.md))."
    echo "Berth and the distribution registry 2.8 run on the same machine in the same run and are"
    echo "measured by the same client, \`berth-bench\` (one keep-alive HTTP/1.1 connection per"
    echo "worker, request bodies generated on the fly, every answer checked), workload by workload"
    echo "in alternating rounds (the order of the registries is reversed every other round), on"
    echo "fresh repositories and blob contents every round. Each figure is the median over the"
    echo "rounds, with the min–max; a ratio is Berth's median ÷ distribution's, with the range of"
    echo "the per-round ratios. The machine's limits (SHA-256, disk write + fsync, loopback HTTP)"
    echo "are measured by the same harness in the same run: machines differ, so only ratios and"
    echo "fractions of those limits compare between machines. In the chart every line reads the"
    echo "same way: throughput as Berth ÷ distribution, latency, start-up time and memory as"
    echo "distribution ÷ Berth, so a bar right of 1× is a line Berth wins."
    echo
    echo "Raw records: [benchmarks.json](benchmarks.json) (one JSON array; \`berth-bench report"
    echo "docs/benchmarks.json\` renders the tables again). Chart: [benchmarks.svg](benchmarks.svg)."
    echo
    page benchmarks.svg
    # The hand-written reading of the figures (why a target is missed), kept with the
    # harness: update it with every published run.
    if [ $quick = 0 ] && [ -f "$repo/bench/analysis.md" ]; then
      echo
      cat "$repo/bench/analysis.md"
    fi
  } >"$docs/benchmarks.md"
  cp "$chart" "$docs/benchmarks.svg"
  cp "$work/results.json" "$docs/benchmarks.json"
  echo "published: $docs/benchmarks.md, benchmarks.svg, benchmarks.json" >&2
fi
