#!/usr/bin/env bash
# Makes sure a Redis answers on ADDR (default 127.0.0.1:6379). When none
# does, starts a private redis-server there, its data under .tandem/redis.
set -euo pipefail
addr=${1:-127.0.0.1:6379}
host=${addr%:*}; port=${addr##*:}
ping() { (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ping; then exit 0; fi
dir=$(pwd)/.tandem/redis-$port
mkdir -p "$dir"
echo "starting redis-server on $addr (data in $dir)"
redis-server --daemonize yes --bind "$host" --port "$port" --dir "$dir" \
  --appendonly yes --appendfsync everysec --save "" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
echo "redis-server did not answer on $addr; see $dir/redis.log" >&2
exit 1
