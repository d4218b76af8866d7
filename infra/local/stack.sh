#!/usr/bin/env bash
# One entry point for the local stack: the Kafka broker and the Flink standalone cluster.
#
#   stack.sh up [kafka|flink|all]     (default all)
#   stack.sh down [kafka|flink|all]
#   stack.sh status
#
# Ports and folders are set by the FEDSTREAM_* variables documented in kafka.sh and flink.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
what="${2:-all}"
case "${1:-}" in
  up)
    [[ "$what" == flink ]] || "$HERE/kafka.sh" start
    [[ "$what" == kafka ]] || "$HERE/flink.sh" start
    ;;
  down)
    [[ "$what" == kafka ]] || "$HERE/flink.sh" stop
    [[ "$what" == flink ]] || "$HERE/kafka.sh" stop
    ;;
  status)
    rc=0
    "$HERE/kafka.sh" status || rc=$?
    "$HERE/flink.sh" status || rc=$?
    exit "$rc"
    ;;
  *) echo "usage: $0 up|down|status [kafka|flink|all]" >&2; exit 2 ;;
esac
