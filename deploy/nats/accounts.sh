#!/usr/bin/env bash
# accounts.sh: print the NATS accounts configuration of netpulse: account
# NETPULSE (JetStream enabled) with one user per role, each allowed only what
# that role does. Include the output from a nats-server config
# (server.conf.tmpl next to this script does: `include accounts.conf`).
#
#   accounts.sh --detector CRED --sink CRED --probe HOST=CRED [--probe HOST=CRED]... \
#               [--viewer CRED] [--detectors LIST] [--group-prefix PREFIX] > accounts.conf
#
# CRED is how the user proves who it is:
#   nkey:U...        a user nkey's public key (`nk -gen user -pubout`); the service
#                    holds the seed (nats.nkey_seed_file). Nothing secret in this file.
#   password:HASH    a bcrypt hash of the password (`nats server passwd`, or
#                    `htpasswd -bnBC 11 "" PASSWORD | tr -d ':\n'`); the service
#                    holds the password (nats.user, nats.password_file).
#                    A plain text password works too, but then this file is a secret.
#
# Users (the service sets nats.inbox_prefix to _INBOX.<user>: each user may
# read the replies to its own requests only):
#   netpulse-probe-<HOST>  publish netpulse.events.<HOST>.> only; look up and create
#                          (not change) stream NETPULSE_EVENTS. HOST is the probe's
#                          host token (its `host` key, or the sanitized host name).
#   netpulse-detector      read NETPULSE_EVENTS (warm-up replay, last snapshot);
#                          publish alerts and dead letters; create or update
#                          NETPULSE_EVENTS, NETPULSE_ALERTS, NETPULSE_DEADLETTER; its
#                          group state: KV buckets <prefix>-replicas, <prefix>-alerts,
#                          elastic-consumer-groups and the work-queue streams
#                          NETPULSE_EVENTS-<prefix>-<detector> of the detectors in LIST.
#   netpulse-sink          create or update NETPULSE_EVENTS and NETPULSE_ALERTS; create,
#                          read and ack its consumers on them. Publishes nothing else.
#   netpulse-viewer        (optional) `nats sub 'netpulse.>'` and stream/consumer info.
set -euo pipefail -f # -f: subjects hold * and >, never file names

usage() {
	sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 64
}
die() {
	echo "accounts.sh: $*" >&2
	exit 64
}

account=NETPULSE
detectors=conn_failure,conn_leak,drop_spike,listen_overflow,peer_not_closing,port_exhaustion,retransmit_spike,slow_handshake
prefix=netpulse-detector
detector_cred= sink_cred= viewer_cred=
probes=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--detector) detector_cred=${2-}; shift 2 ;;
	--sink) sink_cred=${2-}; shift 2 ;;
	--viewer) viewer_cred=${2-}; shift 2 ;;
	--probe) probes+=("${2-}"); shift 2 ;;
	--detectors) detectors=${2-}; shift 2 ;;
	--group-prefix) prefix=${2-}; shift 2 ;;
	--account) account=${2-}; shift 2 ;;
	-h | --help) usage ;;
	*) die "unknown argument '$1' (--help)" ;;
	esac
done
[[ -n $detector_cred && -n $sink_cred && ${#probes[@]} -gt 0 ]] || die "--detector, --sink and at least one --probe are needed (--help)"

# A subject token: no dots, wildcards, white space or quotes.
token_re='^[A-Za-z0-9_-]+$'
[[ $account =~ $token_re ]] || die "--account: '$account' is not a plain name"
[[ $prefix =~ $token_re ]] || die "--group-prefix: '$prefix' is not a subject token"
IFS=, read -r -a detector_list <<<"$detectors"
for d in "${detector_list[@]}"; do
	[[ $d =~ $token_re ]] || die "--detectors: '$d' is not a detector name"
done

# check_cred USER CRED: refuse a credential that is not nkey:U... or
# password:HASH (run in this shell, so that die ends the script).
check_cred() {
	local user=$1 cred=$2
	case $cred in
	nkey:*)
		[[ ${cred#nkey:} =~ ^U[A-Z2-7]{55}$ ]] || die "$user: '${cred#nkey:}' is not a public user nkey (U + 55 base32 characters)"
		;;
	password:?*)
		[[ ${cred#password:} != *[\"\\$'\n']* ]] || die "$user: the password (hash) must not hold \" \\ or a newline"
		;;
	*) die "$user: credential must be nkey:U... or password:HASH, got '${cred%%:*}:...'" ;;
	esac
}

# credential USER CRED: the user's credential line (CRED checked already).
credential() {
	case $2 in
	nkey:*) printf 'nkey: "%s"' "${2#nkey:}" ;;
	password:*) printf 'user: "%s", password: "%s"' "$1" "${2#password:}" ;;
	esac
}

# Check everything before printing anything.
check_cred netpulse-detector "$detector_cred"
check_cred netpulse-sink "$sink_cred"
[[ -z $viewer_cred ]] || check_cred netpulse-viewer "$viewer_cred"
for p in "${probes[@]}"; do
	host=${p%%=*}
	[[ $p == *=* && $host =~ $token_re ]] || die "--probe: want HOST=CRED with HOST a subject token (letters, digits, _ and -), got '${p%%=*}'"
	check_cred "netpulse-probe-$host" "${p#*=}"
done

# list ITEM...: a list of quoted strings, one a line.
list() {
	local s
	printf '['
	for s in "$@"; do
		printf '\n            "%s"' "$s"
	done
	printf '\n          ]'
}

# user NAME CRED PUB_LIST SUB_LIST: one user entry.
user() {
	printf '      {\n        %s\n' "$(credential "$1" "$2")"
	printf '        # %s\n' "$1"
	printf '        permissions: {\n'
	printf '          publish: { allow: %s }\n' "$3"
	printf '          subscribe: { allow: %s }\n' "$4"
	printf '        }\n      }\n'
}

api='$JS.API'
# stream_rw STREAM: look it up, create it, change its limits.
stream_rw() { echo "$api.STREAM.INFO.$1" "$api.STREAM.CREATE.$1" "$api.STREAM.UPDATE.$1"; }
# kv BUCKET: look up and create or update a KV bucket, put, update and
# delete keys; kv_get BUCKET: get keys.
kv() { echo "$(stream_rw "KV_$1")" "\$KV.$1.>"; }
kv_get() { echo "$api.DIRECT.GET.KV_$1.>"; }
# kv_watch BUCKET: watch and list keys: ordered consumers, deleted when the
# watch ends, and the flow-control replies a busy watch needs.
kv_watch() { echo "$api.CONSUMER.CREATE.KV_$1.>" "$api.CONSUMER.DELETE.KV_$1.*" "\$JS.FC.KV_$1.>"; }
# consume STREAM: create (or update), look up and pull from consumers of
# STREAM and ack their messages.
consume() {
	echo "$api.CONSUMER.CREATE.$1.>" "$api.CONSUMER.INFO.$1.*" "$api.CONSUMER.MSG.NEXT.$1.*" "\$JS.ACK.$1.>"
}

detector_pub=(
	"netpulse.alerts.>" "netpulse.deadletter.detector.>"
	# account info: creating a KV bucket asks for the server's JetStream API level
	"$api.INFO"
	$(stream_rw NETPULSE_EVENTS) $(stream_rw NETPULSE_ALERTS) $(stream_rw NETPULSE_DEADLETTER)
	# warm-up replay: ordered consumers (no acks), deleted after; the host's last snapshot
	"$api.CONSUMER.CREATE.NETPULSE_EVENTS.>" "$api.CONSUMER.MSG.NEXT.NETPULSE_EVENTS.*"
	"$api.CONSUMER.DELETE.NETPULSE_EVENTS.*" "$api.STREAM.MSG.GET.NETPULSE_EVENTS"
	# heartbeats; firing alerts (watched); pcgroups' group configs (watched; pcgroups creates
	# the bucket, never updates it)
	$(kv "$prefix-replicas") $(kv_get "$prefix-replicas")
	$(kv "$prefix-alerts") $(kv_watch "$prefix-alerts")
	"$api.STREAM.INFO.KV_elastic-consumer-groups" "$api.STREAM.CREATE.KV_elastic-consumer-groups"
	"\$KV.elastic-consumer-groups.>" $(kv_get elastic-consumer-groups) $(kv_watch elastic-consumer-groups)
)
# Each detector's work-queue stream (pcgroups creates it, never updates it)
# and its members' consumers: pulled, acked, deleted when a member leaves or
# dies, unpinned by pcgroups.
for d in "${detector_list[@]}"; do
	s="NETPULSE_EVENTS-$prefix-$d"
	detector_pub+=("$api.STREAM.INFO.$s" "$api.STREAM.CREATE.$s" $(consume "$s") "$api.CONSUMER.DELETE.$s.*" "$api.CONSUMER.UNPIN.$s.*")
done
sink_pub=(
	$(stream_rw NETPULSE_EVENTS) $(stream_rw NETPULSE_ALERTS)
	$(consume NETPULSE_EVENTS) $(consume NETPULSE_ALERTS)
)

cat <<EOF
# netpulse's NATS accounts: one user per role, each allowed only what it does.
# Made by deploy/nats/accounts.sh; README "Security" says how to use it.
accounts {
  $account {
    jetstream: enabled
    users: [
EOF
user netpulse-detector "$detector_cred" "$(list "${detector_pub[@]}")" "$(list "_INBOX.netpulse-detector.>")"
user netpulse-sink "$sink_cred" "$(list "${sink_pub[@]}")" "$(list "_INBOX.netpulse-sink.>")"
for p in "${probes[@]}"; do
	host=${p%%=*}
	user "netpulse-probe-$host" "${p#*=}" \
		"$(list "netpulse.events.$host.>" "$api.STREAM.INFO.NETPULSE_EVENTS" "$api.STREAM.CREATE.NETPULSE_EVENTS")" \
		"$(list "_INBOX.netpulse-probe-$host.>")"
done
if [[ -n $viewer_cred ]]; then
	user netpulse-viewer "$viewer_cred" \
		"$(list "$api.INFO" "$api.STREAM.NAMES" "$api.STREAM.LIST" "$api.STREAM.INFO.*" "$api.CONSUMER.NAMES.*" "$api.CONSUMER.LIST.*" "$api.CONSUMER.INFO.*.*")" \
		"$(list "netpulse.>" "_INBOX.netpulse-viewer.>")"
fi
cat <<EOF
    ]
  }
}
EOF
