#!/bin/bash
# The image's health probe, installed as /usr/local/bin/bulwark-healthcheck: exits 0 when
# `GET http://127.0.0.1:PORT/PATH` answers 200, 1 otherwise (the status line goes to stderr,
# where `docker inspect` shows it).
# Usage: bulwark-healthcheck [PATH] [PORT]; PATH defaults to /live, PORT to the port of
# BULWARK_HTTP_ADDR, else 8080 (the container config's).
# It speaks HTTP/1.1 over bash's /dev/tcp, so the image needs neither curl nor wget, nor the
# dozen libraries curl brings. Plain HTTP only: a node serving HTTPS ([http.tls]) needs
# another probe.
set -euo pipefail
path=${1:-/live}
http_addr=${BULWARK_HTTP_ADDR:-0.0.0.0:8080}
port=${2:-${http_addr##*:}}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status_line=""
IFS= read -r -t 2 status_line <&3 || true
case "$status_line" in
    "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "unhealthy: GET ${path} on port ${port} answered: ${status_line%$'\r'}" >&2
exit 1
