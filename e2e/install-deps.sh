#!/bin/sh
# Installs the third-party programs the end-to-end tests in e2e/ drive, from
# Debian's packages: chromium (headless EventSource client), nginx (a proxy
# in front of Caddy), curl (HTTP/2 client), Node with npm (the npm SSE
# client libraries), redis-server and redis-sentinel (fleet-wide limits),
# prometheus (the dashboard's queries), and haproxy, apache2, varnish, squid
# and lighttpd (the other hops operators put in front of Caddy).
#
# Idempotent: installs only what is missing, and does nothing when all are
# present. Runs as root (CI), or through sudo when there is one.
#
# The tests start their own nginx, redis-server, redis-sentinel, prometheus,
# haproxy, apache2, varnishd, squid and lighttpd on free loopback ports; the Debian
# packages' services are kept from starting during the install (nginx,
# apache2 and lighttpd would listen on port 80 on every interface, squid on
# 3128, varnish on 6081).
set -eu

missing=""
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v curl >/dev/null 2>&1 || [ -x /usr/bin/curl ] || missing="$missing curl"
# Node runs the npm SSE client libraries (e2e/clients, installed with npm ci);
# they need Node >= 20.18.1: Debian bookworm's nodejs (18) is too old, and
# the client tests then fail with a message saying so
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# a Redis for the fleet-wide limit tests (each test starts its own)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing="$missing redis-server"
# the sentinels of the failover tests
command -v redis-sentinel >/dev/null 2>&1 || [ -x /usr/bin/redis-sentinel ] || missing="$missing redis-sentinel"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus" # dashboard_test.go runs the dashboard's queries
# the hops of hops_test.go, each in front of Caddy
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
command -v apache2 >/dev/null 2>&1 || [ -x /usr/sbin/apache2 ] || missing="$missing apache2"
command -v varnishd >/dev/null 2>&1 || [ -x /usr/sbin/varnishd ] || missing="$missing varnish"
command -v squid >/dev/null 2>&1 || [ -x /usr/sbin/squid ] || missing="$missing squid"
command -v lighttpd >/dev/null 2>&1 || [ -x /usr/sbin/lighttpd ] || missing="$missing lighttpd"

if [ -z "$missing" ]; then
	echo "e2e deps present: chromium nginx curl node npm redis-server redis-sentinel prometheus haproxy apache2 varnishd squid lighttpd"
	exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi

# keep package scripts from starting services, unless a policy is in place
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
	$SUDO chmod 755 "$policy"
	own_policy=1
fi
cleanup() {
	if [ -n "$own_policy" ]; then
		$SUDO rm -f "$policy"
	fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # $missing is a list of package names
$SUDO apt-get install -y --no-install-recommends $missing
echo "e2e deps installed:$missing"
