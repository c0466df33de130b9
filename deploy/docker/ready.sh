#!/bin/bash
# Container health check: 0 when /health/ready on this container's own port answers 200 (bash's
# /dev/tcp: the slim image has no HTTP client). `ready [PORT]`; default: ringsfu's PORT, or the
# gateway's SFU_GATEWAY_PORT when only that is set, else 8070.
port=${1:-${PORT:-${SFU_GATEWAY_PORT:-8070}}}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
read -r -t 3 _ status _ <&3 && [ "$status" = 200 ]
