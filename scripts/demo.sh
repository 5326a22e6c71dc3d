#!/usr/bin/env bash
# `make demo`: a rollcall server on the in-memory store, a simulated
# meeting played against it (`rollcall simulate`), then the server keeps
# running so the dashboard can be looked at after the meeting (Ctrl-C stops
# it; DEMO_KEEP=0 stops it at once). The server never outlives this script:
# it is stopped on Ctrl-C, on failure and on exit.
#
# Settings (environment): DEMO_PORT (6001), DEMO_MINUTES (3), DEMO_PREP
# (30s), DEMO_FINALIZE_DELAY (15s), DEMO_KEEP (1), DEMO_SEED, DEMO_ROOM,
# DEMO_LOG (target/demo-server.log), ROLLCALL_BIN (target/release/rollcall).
set -euo pipefail

bin=${ROLLCALL_BIN:-target/release/rollcall}
port=${DEMO_PORT:-6001}
minutes=${DEMO_MINUTES:-3}
prep=${DEMO_PREP:-30s}
finalize=${DEMO_FINALIZE_DELAY:-15s}
keep=${DEMO_KEEP:-1}
log=${DEMO_LOG:-target/demo-server.log}
room=${DEMO_ROOM:-itqan-academy-quran-session-$((100000 + RANDOM * 30 % 900000))}
base=http://127.0.0.1:$port
dashboard="$base/?channel=session.${room##*-}&room=$room"
# A quarter of the session, as 15 minutes are of an hour: the lateness
# grace, and the heartbeat timeout, so the simulated lost leave is closed
# by the server well before the room finishes.
quarter=$((minutes * 15))s

[[ -x $bin ]] || { echo "demo: no rollcall binary at $bin (run: make build)" >&2; exit 1; }
command -v curl >/dev/null || { echo "demo: needs curl (apt-get install curl)" >&2; exit 1; }

server=
sim=
stop_server() {
    # The simulation first: a meeting must not go on against nothing.
    if [[ -n $sim ]] && kill -0 "$sim" 2>/dev/null; then
        kill -TERM "$sim" 2>/dev/null || true
        wait "$sim" 2>/dev/null || true
    fi
    sim=
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        echo "demo: stopping the server"
        # SIGTERM: the server closes sockets with 4200 and drains, then exits.
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    server=
}
trap stop_server EXIT
# Ctrl-C also reaches the server and simulate (same process group); the
# EXIT trap then waits for the server to be gone. (A closed terminal too.)
trap 'exit 130' INT TERM HUP

# Something already answering there (a `make run`) would take our
# requests while our server fails to bind: refuse before starting.
if curl -s -o /dev/null "$base/healthz"; then
    echo "demo: something already listens on port $port (make run?); stop it or set DEMO_PORT" >&2
    exit 1
fi

mkdir -p "$(dirname "$log")"
# Only the demo's settings: a Redis URL or naming templates from the
# caller's shell would make the printed dashboard URL wrong.
env -u ROLLCALL_REDIS_URL -u ROLLCALL_CHANNEL_TEMPLATE -u ROLLCALL_ROOM_PATTERN \
    -u ROLLCALL_IDENTITY_PATTERN -u ROLLCALL_REPORT_WEBHOOK_URL -u LIVEKIT_URL \
    ROLLCALL_LISTEN="127.0.0.1:$port" \
    ROLLCALL_FINALIZE_DELAY="$finalize" \
    ROLLCALL_HEARTBEAT_TIMEOUT="$quarter" \
    ROLLCALL_LATE_GRACE="$quarter" \
    ROLLCALL_SWEEP_INTERVAL=2s \
    RUST_LOG="${RUST_LOG:-info}" \
    "$bin" serve >"$log" 2>&1 &
server=$!

for _ in $(seq 200); do
    kill -0 "$server" 2>/dev/null || {
        echo "demo: the server exited at startup (port $port in use? set DEMO_PORT); its log, $log:" >&2
        tail -n 5 "$log" >&2
        exit 1
    }
    curl -fs -o /dev/null "$base/readyz" && break
    sleep 0.1
done
curl -fs -o /dev/null "$base/readyz" && kill -0 "$server" 2>/dev/null ||
    { echo "demo: the server did not become ready (log: $log)" >&2; exit 1; }

echo "demo: rollcall on $base (in-memory store; log: $log)"
echo "demo: open the dashboard now: $dashboard"
# The start page lists every session; it needs a viewer link for all rooms.
echo "demo: every session (a viewer link, 8 h): $("$bin" link --all --url "$base" 2>/dev/null)"
# In the background and waited for: bash runs a trap only once the
# foreground command is done, so a TERM to this script alone would wait
# for the whole meeting; `wait` is interrupted at once.
"$bin" simulate --url "$base" --room "$room" --minutes "$minutes" --prep "$prep" \
    --wait-final 2m ${DEMO_SEED:+--seed "$DEMO_SEED"} &
sim=$!
wait "$sim"
sim=

if [[ $keep == 0 ]]; then
    exit 0
fi
echo "demo: the meeting is over and final; the server keeps running so you can look at it:"
echo "demo:   $dashboard"
echo "demo: Ctrl-C stops it."
# Ctrl-C reaches the server too, which shuts down cleanly (status 0); bash
# may then take that for the end of the wait rather than an interrupt. Only
# an interrupt (or the server's own end) gets past this wait: say so.
status=0
wait "$server" || status=$?
server=
echo "demo: the server stopped"
exit $((status == 0 ? 130 : status))
