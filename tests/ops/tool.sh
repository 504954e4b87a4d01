#!/bin/sh
# A stand-in deploy tool for tests/it/ops.rs. It runs in the run's working
# directory (the bot's data directory), records each call in calls.log and
# its environment in env.log, and behaves by the version it is given:
#   *-hang   starts a background sleep (pid in hang.pid) and waits for it
#   *-flood  prints without end
#   *-slow   says it started, then sleeps (pid in slow.pid)
#   *-bad    deploys, but verify fails afterwards
set -u
echo "$*" >> calls.log
case "$1" in
deploy)
    env | sort > env.log
    echo "deploying $2 to $3"
    echo "using token $DEPLOY_TOKEN"
    echo "Authorization: Bearer zyxwvutsrqponmlkjihg"
    case "$2" in
    *-hang) sleep 300 & echo $! > hang.pid; wait ;;
    *-flood) yes "flood line flood line flood line" ;;
    *-slow) echo "slow deploy started"; sleep 300 & echo $! > slow.pid; wait ;;
    esac
    echo "$2" > current
    echo "done: $2"
    ;;
verify)
    case "$(cat current)" in
    *-bad*) echo "unhealthy: $(cat current)"; exit 1 ;;
    *) echo "healthy: $(cat current)" ;;
    esac
    ;;
rollback)
    echo "rolling back to $2"
    echo "$2" > current
    ;;
*)
    echo "unknown call: $*" >&2
    exit 2
    ;;
esac
