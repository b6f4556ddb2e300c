#!/usr/bin/env bash
# The fraud pipeline scaled out: three `roo serve` in one Kafka consumer
# group, against a local broker, with one command:
#
#     bash examples/kafka/run.sh
#
# 1. builds roo (release) and starts roo-dev-broker (librdkafka's mock
#    cluster on real sockets) with the topic `transactions` (6 partitions)
#    and the compacted changelog `roo-fraud-changelog` (6);
# 2. starts three members (member.toml: a card's rolling features, its
#    profile as of each event, the model), all writing one directory;
# 3. feeds card transactions into the topic (feed.toml: the generator,
#    keyed by card_id), and halfway kills member 2 with SIGKILL: its
#    partitions move to the others, with their features, from the
#    changelog;
# 4. waits until every event is scored, stops the members, and prints
#    who scored what. With Python's pyarrow it also scores the same events
#    in one batch (`roo score --config`) and checks the three processes'
#    output equals it bit for bit, event by event.
#
# Everything lands in examples/kafka/out/ (or $OUT). EVENTS (default
# 120000) sets the stream's length; KILL=0 keeps every member alive;
# ROO_BIN_DIR names a directory with built `roo` and `roo-dev-broker`
# (then nothing is built); PYTHON, the Python for the comparison.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$HERE/out}
EVENTS=${EVENTS:-120000}
KILL=${KILL:-1}
PYTHON=${PYTHON:-python3}
MEMBERS=3
PARTITIONS=6

if [ -z "${ROO_BIN_DIR:-}" ]; then
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p roo-appliance --bins
  BIN=$ROOT/target/release
else
  BIN=$ROO_BIN_DIR
fi

rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Waits (at most $2 seconds) until the command $1 succeeds.
wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run.sh: timed out waiting for: $1" >&2
      tail -n 20 "$OUT"/*.log >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

"$BIN/roo-dev-broker" --topic "transactions:$PARTITIONS" \
  --topic "roo-fraud-changelog:$PARTITIONS" </dev/null >"$OUT/broker.txt" 2>"$OUT/broker.log" &
PIDS+=($!)
wait_for '[ -s "$OUT/broker.txt" ]' 30
BROKERS=$(head -n 1 "$OUT/broker.txt")
echo "broker: $BROKERS"

fill() {
  sed -e "s|@BROKERS@|$BROKERS|g" -e "s|@HERE@|$HERE|g" -e "s|@EVENTS@|$EVENTS|g" \
    -e "s|@MEMBER@|$2|g" "$1"
}

declare -A MEMBER_PID
for m in $(seq 1 $MEMBERS); do
  fill "$HERE/member.toml" "$m" >"$OUT/member-$m.toml"
  "$BIN/roo" serve --config "$OUT/member-$m.toml" --ready-file "$OUT/member-$m.ready.json" \
    >"$OUT/member-$m.log" 2>&1 &
  MEMBER_PID[$m]=$!
  PIDS+=($!)
done
for m in $(seq 1 $MEMBERS); do
  wait_for "[ -s '$OUT/member-$m.ready.json' ]" 60
done
echo "members: ${MEMBERS} roo serve, group roo-fraud"

# The published files name their partition and offsets:
# part-transactions-pP-FIRST-END.parquet. Every event is scored once the
# files reach each partition's end, EVENTS over the six.
covered() {
  local total=0 p end best
  for p in $(seq 0 $((PARTITIONS - 1))); do
    best=0
    for f in "$OUT"/scores/part-transactions-p"$p"-*.parquet; do
      [ -e "$f" ] || continue
      end=${f##*-}
      end=$((10#${end%.parquet}))
      [ "$end" -gt "$best" ] && best=$end
    done
    total=$((total + best))
  done
  echo "$total"
}

fill "$HERE/feed.toml" 0 >"$OUT/feed.toml"
"$BIN/roo" serve --config "$OUT/feed.toml" >"$OUT/feed.log" 2>&1 &
FEED=$!
PIDS+=($FEED)
echo "feeding $EVENTS card transactions into topic transactions ($PARTITIONS partitions, keyed by card_id)"
if [ "$KILL" = 1 ]; then
  wait_for '[ "$(covered)" -ge $((EVENTS / 4)) ]' 120
  kill -KILL "${MEMBER_PID[2]}"
  echo "killed member 2 (SIGKILL) with $(covered) of $EVENTS events scored: its partitions move to members 1 and 3"
fi
wait "$FEED"
wait_for '[ "$(covered)" -eq "$EVENTS" ]' 180
echo "every event scored: $(covered) of $EVENTS, in $(ls "$OUT/scores" | wc -l) files in $OUT/scores"

for m in $(seq 1 $MEMBERS); do
  if [ "$m" = 2 ] && [ "$KILL" = 1 ]; then continue; fi
  kill -TERM "${MEMBER_PID[$m]}"
done
for m in $(seq 1 $MEMBERS); do
  wait "${MEMBER_PID[$m]}" 2>/dev/null || true
done
for m in $(seq 1 $MEMBERS); do
  restored=$(grep -c "restored from changelog" "$OUT/member-$m.log" || true)
  summary=$(grep "^roo: pipeline live" "$OUT/member-$m.log" || echo "killed: no summary")
  echo "member $m: $summary; $restored partitions restored from the changelog"
done

# The batch cross-check: the same events through the same operators in
# one process (`roo score --config`), then compared event by event.
"$BIN/roo" score --config "$OUT/member-1.toml" --pipeline live \
  --input "$OUT"/events/part-000000.arrow --output "$OUT/batch.parquet" >"$OUT/batch.log" 2>&1
if "$PYTHON" -c "import pyarrow" 2>/dev/null; then
  "$PYTHON" "$HERE/compare.py" "$OUT/scores" "$OUT/batch.parquet"
else
  echo "batch: $OUT/batch.parquet (install pyarrow to compare it with the stream's files)"
fi
