#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for the tests of the PostgreSQL journal
# (ctest's pg fixture, tests/CMakeLists.txt; scripts/test.sh).
#
# usage: scripts/pg.sh start DIR    start a cluster and write into DIR:
#                                     url      postgres://recoveryd@127.0.0.1:PORT/recoveryd
#                                     pgpass   the role's password, for PGPASSFILE (0600)
#                                     datadir  where the cluster lives (for stop)
#                                     port
#        scripts/pg.sh stop DIR     stop it (fast) and remove its data; no cluster is fine
#        scripts/pg.sh restart DIR [DOWN]
#                                   stop the server (connections cut), keep it down
#                                   DOWN seconds, start it again: same port, same data
#
# The cluster: initdb + pg_ctl of Debian's postgresql-15 (PG_BIN to use
# others) in a temporary data directory, listening on 127.0.0.1 only on a
# free port, its unix socket in the data directory. initdb refuses root, so
# as root the server runs as the `postgres` system user (PG_USER) that the
# Debian package creates; otherwise as the caller. The role `recoveryd`
# logs in over TCP with a password (scram-sha-256) and owns the database
# `recoveryd`; only the cluster's superuser, over the socket that only the
# server's user can reach, is trusted. A start first stops what a previous
# start in DIR left running, so a killed run never blocks the next one.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-postgres}
START_TIMEOUT=60

die() {
	echo "pg.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 start|stop DIR, or $0 restart DIR [SECONDS_DOWN]" >&2
	exit 2
}

[ $# -eq 2 ] || { [ $# -eq 3 ] && [ "$1" = restart ]; } || usage
cmd=$1
case "$cmd" in
start) mkdir -p "$2" ;;
stop) [ -d "$2" ] || exit 0 ;;
restart) [ -f "$2/datadir" ] || die "$2: no cluster started there" ;;
*) usage ;;
esac
dir=$(cd "$2" && pwd)

# Runs a PostgreSQL program as the server's user, from a directory that
# user can read.
if [ "$(id -u)" -eq 0 ]; then
	as_server() { (cd / && runuser -u "$PG_USER" -- "$@"); }
else
	as_server() { (cd / && "$@"); }
fi

stop() {
	local data pid
	[ -f "$dir/datadir" ] || return 0
	data=$(cat "$dir/datadir")
	if [ -f "$data/postmaster.pid" ]; then
		if ! as_server "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1; then
			as_server "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
		fi
		# Still there (pg_ctl could not signal it): the postmaster's pid
		# file says which process is ours.
		pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	# Keep the server's log next to the results.
	[ -f "$data/server.log" ] && cp "$data/server.log" "$dir/server.log" 2>/dev/null || true
	case "$data" in
	"$dir/data" | */recoveryd-pg.*) rm -rf "$data" ;;
	esac
	rm -f "$dir/datadir" "$dir/url" "$dir/pgpass" "$dir/port"
}

# A port the kernel has free now (else one at random: a taken one fails the
# bind, and start tries another).
free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 40000))
}

start() {
	local data port pw tries=0
	for p in initdb pg_ctl postgres psql pg_isready; do
		[ -x "$PG_BIN/$p" ] || die "$PG_BIN/$p not found: install postgresql-15 (scripts/deps.sh)"
	done
	if [ "$(id -u)" -eq 0 ]; then
		id -u "$PG_USER" >/dev/null 2>&1 || die "no user $PG_USER to run the server as (the postgresql-15 package creates it)"
	fi
	stop

	# The data directory: DIR/data when the server's user can reach it and
	# its socket path fits in a sockaddr_un, else a new directory in /tmp.
	data="$dir/data"
	if [ ${#data} -gt 80 ] || ! as_server test -x "$dir"; then
		data=$(mktemp -d /tmp/recoveryd-pg.XXXXXX)
	else
		rm -rf "$data"
		mkdir "$data"
	fi
	echo "$data" >"$dir/datadir"
	[ "$(id -u)" -eq 0 ] && chown "$PG_USER:" "$data"
	chmod 700 "$data"

	as_server "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C --no-sync \
		--auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; die "initdb failed"; }
	# What initdb wrote, made explicit: the superuser over the socket (in
	# the 0700 data directory), everything else by password over TCP.
	cat >"$data/pg_hba.conf" <<-EOF
		local all postgres trust
		host all all 127.0.0.1/32 scram-sha-256
	EOF
	cat >>"$data/postgresql.conf" <<-EOF
		# scripts/pg.sh
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$data'
		shared_buffers = 32MB
		max_connections = 50
		fsync = on
		password_encryption = 'scram-sha-256'
	EOF

	# A free port can be taken between the probe and the bind: try again.
	while :; do
		port=$(free_port)
		if as_server "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -o "-p $port" \
			-w -t "$START_TIMEOUT" start >/dev/null 2>&1; then
			break
		fi
		tries=$((tries + 1))
		if [ $tries -ge 3 ] || ! grep -q "could not bind\|could not create any TCP/IP sockets" "$data/server.log" 2>/dev/null; then
			cat "$data/server.log" >&2 2>/dev/null || true
			stop
			die "the server did not start"
		fi
	done
	echo "$port" >"$dir/port"

	# pg_ctl -w waited for it; make sure TCP answers too, in bounded time.
	local deadline=$((SECONDS + START_TIMEOUT))
	until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; do
		[ $SECONDS -lt $deadline ] || { stop; die "the server does not accept connections on 127.0.0.1:$port"; }
		sleep 0.2
	done

	pw=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	as_server "$PG_BIN/psql" -X -q -h "$data" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
		-c "CREATE ROLE recoveryd LOGIN CREATEDB PASSWORD '$pw'" \
		-c "CREATE DATABASE recoveryd OWNER recoveryd" >/dev/null ||
		{ stop; die "cannot create the role and the database"; }
	(umask 077 && echo "127.0.0.1:$port:*:recoveryd:$pw" >"$dir/pgpass")
	echo "postgres://recoveryd@127.0.0.1:$port/recoveryd" >"$dir/url"

	# The role logs in with the password file, as the tests will.
	PGPASSFILE="$dir/pgpass" "$PG_BIN/psql" -X -q -w "$(cat "$dir/url")" -v ON_ERROR_STOP=1 \
		-c 'SELECT 1' >/dev/null || { stop; die "the role recoveryd cannot log in"; }
	cat "$dir/url"
}

# Stop the server (fast: connections are cut), keep it down for DOWN
# seconds, start it again on the same port with the same data: what a
# database restart or failover looks like to recoveryd.
restart() {
	local data port down=${1:-0}
	data=$(cat "$dir/datadir")
	port=$(cat "$dir/port")
	as_server "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null || die "the server did not stop"
	sleep "$down"
	as_server "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -o "-p $port" -w -t "$START_TIMEOUT" \
		start >/dev/null || die "the server did not start again"
}

case "$cmd" in
start) start ;;
stop) stop ;;
restart) restart "${3:-0}" ;;
*) usage ;;
esac
