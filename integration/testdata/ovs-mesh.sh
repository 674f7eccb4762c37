#!/bin/bash
# ovs-mesh.sh - the real consumer: three nodes, each with its own OVS
# (ovsdb-server, ovs-vswitchd), pluto, OVS's ovs-monitor-ipsec and an
# ipsecca sidecar in --ovs mode, carry geneve over ESP in a full mesh on
# certificates from `ipsecca serve`, while a probe pings every pair every
# 50 ms through rotation, CA renewal, revocation and killed daemons.
# Driven by integration/ovs_test.go inside a user-mode-Linux guest (this
# kernel has no ESP).
#
# Environment: IPSECCA (binary), E2E_OUT (results and logs, on the host),
# OVSMON (ovs-monitor-ipsec, taken out of Debian's .deb: installing
# openvswitch-ipsec would remove libreswan). Results: $E2E_OUT/result,
# $E2E_OUT/facts (KEY=VALUE lines the Go test asserts on), logs in
# $E2E_OUT/logs.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
OUT=${E2E_OUT:?} OVSMON=${OVSMON:?}
PLUTO=/usr/libexec/ipsec/pluto
FACTS=$OUT/facts
NODES="a b c"
SERVER=10.1.1.254:18443
mkdir -p "$OUT/logs"; : > "$FACTS"

log() { echo "[ovs-mesh $(date +%T.%N | cut -c1-12)] $*"; }
fact() { echo "$1=$2" >> "$FACTS"; log "fact $1=$2"; }
idx() { case $1 in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; esac; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

PIDS=()
cleanup() {
    for n in a b c; do
        kill "$(cat "$W/$n/sidecar.pid" 2>/dev/null)" 2>/dev/null
        ipsec whack --ctlsocket "$W/$n/run/pluto.ctl" --shutdown >/dev/null 2>&1
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for n in a b c; do
        for f in pluto.log ovs-monitor-ipsec.log sidecar.log vswitchd.log ipsec.conf; do
            cp "$W/$n/$f" "$OUT/logs/$n-$f" 2>/dev/null
        done
    done
    cp "$W"/*.log "$W"/*.json "$OUT/logs/" 2>/dev/null
}

# ---------------------------------------------------------------- a node
# node_up N: namespace, underlay address, OVS, NSS, pluto, ovs-monitor-ipsec.
node_up() {
    local n=$1 i d=$W/$1; i=$(idx "$1")
    mkdir -p "$d/run" "$d/nss"
    ip netns add "ns$n"
    ip link add "v$n" type veth peer name e0 netns "ns$n"
    ip link set "v$n" master br0 up
    ip -n "ns$n" addr add "10.1.1.$i/24" dev e0
    ip -n "ns$n" link set e0 up; ip -n "ns$n" link set lo up
    # ovs-monitor-ipsec writes left=%defaultroute.
    ip -n "ns$n" route add default via 10.1.1.254
    export OVS_RUNDIR=$d/run OVS_LOGDIR=$d OVS_DBDIR=$d
    ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ip netns exec "ns$n" ovsdb-server "$d/conf.db" --detach --no-chdir --log-file="$d/ovsdb.log" \
        --pidfile="$d/run/ovsdb-server.pid" --remote="punix:$d/run/db.sock" --unixctl="$d/run/ovsdb.ctl"
    ovs-vsctl --db "unix:$d/run/db.sock" --no-wait init
    ip netns exec "ns$n" ovs-vswitchd "unix:$d/run/db.sock" --detach --no-chdir \
        --pidfile="$d/run/ovs-vswitchd.pid" --unixctl="$d/run/vswitchd.ctl" --log-file="$d/vswitchd.log"
    certutil -N -d "sql:$d/nss" --empty-password
    : > "$d/ipsec.conf"; : > "$d/secrets"
    start_pluto "$n"
    start_monitor "$n"
    ovs-vsctl --db "unix:$d/run/db.sock" add-br br-ipsec
    unset OVS_RUNDIR OVS_LOGDIR OVS_DBDIR
}

# start_pluto N: pluto in the node's namespace, by the node's start script,
# which its sidecar runs too (--pluto-start-cmd) after a key rollover.
start_pluto() {
    local n=$1 d=$W/$1
    cat > "$d/start-pluto.sh" <<END
rm -f "$d/run/pluto.ctl" "$d/run/pluto.pid"
$PLUTO --config "$d/ipsec.conf" --ipsecdir "$d" --nssdir "$d/nss" --logfile "$d/pluto.log" \\
    --secretsfile "$d/secrets" --rundir "$d/run" < /dev/null > /dev/null 2>&1
for _ in \$(seq 100); do [ -S "$d/run/pluto.ctl" ] && break; sleep 0.1; done
# The peer's key id ("trying '@node-x' aka *KEYID") is only in base debug.
ipsec whack --ctlsocket "$d/run/pluto.ctl" --debug base >/dev/null
END
    ip netns exec "ns$n" sh "$d/start-pluto.sh"
}

start_monitor() {
    local n=$1 d=$W/$1
    OVS_RUNDIR=$d/run ip netns exec "ns$n" /usr/bin/python3 "$OVSMON" "unix:$d/run/db.sock" \
        --pidfile="$d/run/ovs-monitor-ipsec.pid" --ike-daemon=libreswan --ipsec-conf="$d/ipsec.conf" \
        --ipsec-d="$d/nss" --ipsec-secrets="$d/secrets" --log-file="$d/ovs-monitor-ipsec.log" \
        --ipsec-ctl="$d/run/pluto.ctl" --no-restart-ike-daemon --detach
}

# start_sidecar N: in the node's namespace, like pluto (it reaches the CA
# over the underlay).
start_sidecar() {
    local n=$1 d=$W/$1
    ip netns exec "ns$n" "$IPSECCA" sidecar --server $SERVER --ca-file "$W/ca/ca.pem" --node "node-$n" --token-file "$d/token" \
        --nss-dir "$d/nss" --state-dir "$d/state" --ovs --ovs-rundir "$d/run" --pluto-ctl "$d/run/pluto.ctl" \
        --pluto-start-cmd "sh $d/start-pluto.sh" --report-interval 3s >> "$d/sidecar.log" 2>&1 &
    echo $! > "$d/sidecar.pid"
}

# tunnels N: a geneve port to every peer (remote_name = the peer's CN, as
# OVN sets it to the chassis), an address on br-ipsec, and flows that send
# each peer's traffic to its tunnel and what tunnels bring to the host (a
# NORMAL bridge over a full mesh would loop).
tunnels() {
    local n=$1 i d=$W/$1 p j ports=""; i=$(idx "$1")
    export OVS_RUNDIR=$d/run
    for p in $NODES; do
        [ "$p" = "$n" ] && continue
        j=$(idx "$p")
        ovs-vsctl --db "unix:$d/run/db.sock" add-port br-ipsec "gnv-$p" -- set Interface "gnv-$p" type=geneve \
            "options:remote_ip=10.1.1.$j" "options:remote_name=node-$p"
    done
    ip -n "ns$n" addr add "192.0.0.$i/24" dev br-ipsec; ip -n "ns$n" link set br-ipsec up
    ovs-ofctl del-flows br-ipsec
    for p in $NODES; do
        [ "$p" = "$n" ] && continue
        j=$(idx "$p")
        ovs-ofctl add-flow br-ipsec "priority=20,in_port=LOCAL,ip,nw_dst=192.0.0.$j,actions=output:gnv-$p"
        ovs-ofctl add-flow br-ipsec "priority=20,in_port=LOCAL,arp,arp_tpa=192.0.0.$j,actions=output:gnv-$p"
    done
    ovs-ofctl add-flow br-ipsec "priority=1,actions=LOCAL"
    unset OVS_RUNDIR
}

# ---------------------------------------------------------------- observing
# sa_peers N: the peers N holds an ESP Child SA with.
sa_peers() {
    ipsec whack --ctlsocket "$W/$1/run/pluto.ctl" --trafficstatus 2>/dev/null |
        grep -o "id='@node-[a-z]*'" | sort -u | sed "s/id='@node-//; s/'//" | tr '\n' ' '
}

# full_peers N: the peers N holds both conns' Child SAs with (a tunnel's
# -in and -out conns: geneve to the peer leaves by the -out one).
full_peers() {
    ipsec whack --ctlsocket "$W/$1/run/pluto.ctl" --trafficstatus 2>/dev/null |
        grep -o "\"[^\"]*\".*id='@node-[a-z]*'" | sed "s/^\"\([^\"]*\)-\(in\|out\)-[0-9]*\".*id='@node-\([a-z]*\)'/\3 \2/" |
        sort -u | awk '{ n[$1]++ } END { for (p in n) if (n[p] >= 2) print p }' | tr '\n' ' '
}

# mesh_up NODES...: every listed node holds both Child SAs with every other
# listed node.
mesh_up() {
    local n p
    for n in "$@"; do
        for p in "$@"; do
            [ "$n" = "$p" ] && continue
            full_peers "$n" | grep -qw "$p" || return 1
        done
    done
}

wait_for() { # SECONDS CMD...: poll every 0.2 s
    local deadline=$(( $(date +%s) + $1 )); shift
    while [ "$(date +%s)" -lt $deadline ]; do "$@" && return 0; sleep 0.2; done
    return 1
}

# keyid CERT: libreswan's key id of an RSA certificate's key (the first 9
# base64 characters of the RFC 3110 key: exponent 65537, then modulus).
keyid() {
    local m; m=$(openssl x509 -in "$1" -noout -modulus | cut -d= -f2)
    printf '%b' "$(echo "03010001$m" | sed 's/../\\x&/g')" | base64 -w0 | cut -c1-9
}

# seen_serial N P: the serial of P's certificate that N's pluto verified
# last ("trying '@node-P' aka *KEYID"), mapped by key id over every
# certificate P's sidecar held.
seen_serial() {
    local k c
    k=$(grep -o "trying '@node-$2' aka \*[A-Za-z0-9+/]*" "$W/$1/pluto.log" | tail -1 | sed 's/.*\*//')
    [ -n "$k" ] || return 0
    grep -l -x "$k" "$W/$2/seen/"*.keyid 2>/dev/null | head -1 | xargs -r basename | sed 's/\.keyid$//'
}

# keep_certs: remember every certificate a sidecar held (it prunes old ones).
keep_certs() {
    local n
    local c s
    for n in $NODES; do
        mkdir -p "$W/$n/seen"
        for c in "$W/$n/state/versions/"*.pem; do
            case $c in *-key.pem) continue ;; esac
            s=$(basename "$c" .pem)
            [ -f "$W/$n/seen/$s.keyid" ] || keyid "$c" > "$W/$n/seen/$s.keyid"
        done
    done
}

# dump: what the daemons said, when a step fails.
dump() {
    local n
    log "---- admin.log"; tail -5 "$W/admin.log"
    for n in a b c; do
        log "---- $n sidecar.log"; tail -8 "$W/$n/sidecar.log"
        log "---- $n ovs-monitor-ipsec.log"; tail -8 "$W/$n/ovs-monitor-ipsec.log"
        log "---- $n pluto.log"; grep -v '^.\{26\}| ' "$W/$n/pluto.log" | tail -8
    done
}

current() { cat "$W/$1/state/current" 2>/dev/null; }

# reauthenticated SERIALFILE: every node's pluto verified each peer with
# the serial that peer holds now (and that differs from the one recorded).
all_on_current() {
    local n p k
    keep_certs
    for n in $NODES; do
        for p in $NODES; do
            [ "$n" = "$p" ] && continue
            [ "$(seen_serial "$n" "$p")" = "$(current "$p")" ] || return 1
        done
    done
}

# pluto_view: one line per pair, as the peers' plutos report it.
pluto_view() {
    local n p
    for n in $NODES; do
        # A revoked node's sidecar can no longer report.
        [ "$n" = "${REVOKED:-}" ] && continue
        for p in $NODES; do
            [ "$n" = "$p" ] && continue
            echo "$n $p $(sa_peers "$n" | grep -qw "$p" && echo up || echo down) $(seen_serial "$n" "$p")"
        done
    done
}

# mesh_status TAG [WAIT]: `ipsecca mesh status --json` next to pluto's
# view; with WAIT, once mesh status says the mesh converged (else after
# two report rounds).
mesh_status() {
    if [ -n "${2:-}" ]; then
        "$IPSECCA" mesh status --wait "$2" > /dev/null 2> "$W/mesh-wait-$1.log"
        fact "mesh_$1_converged" $?
    else
        sleep 7
    fi
    OVS_RUNDIR=$W/a/run ovs-appctl -t ovs-monitor-ipsec tunnels/show > "$W/tunnels-show-$1-a.log" 2>&1
    ipsec whack --ctlsocket "$W/a/run/pluto.ctl" --showstates > "$W/showstates-$1-a.log" 2>&1
    ipsec whack --ctlsocket "$W/a/run/pluto.ctl" --trafficstatus > "$W/trafficstatus-$1-a.log" 2>&1
    "$IPSECCA" mesh status --json > "$W/mesh-$1.json" 2> "$W/mesh-$1.err"
    fact "mesh_$1_rc" $?
    pluto_view > "$W/pluto-$1.log"
    local line
    while read -r line; do fact "pluto_$1_$(echo "$line" | awk '{print $1 "_" $2}')" \
        "$(echo "$line" | awk '{print $3 "/" $4}')"; done < "$W/pluto-$1.log"
}

# sidecar_cost: each sidecar's CPU over 30 s with nothing to do but its
# tunnel reports (--report-interval 3s here, 30 s by default), and its RSS.
sidecar_cost() {
    local n pid t0 t1 hz; hz=$(getconf CLK_TCK)
    declare -A before
    for n in $NODES; do
        pid=$(cat "$W/$n/sidecar.pid")
        before[$n]=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    done
    sleep 30
    for n in $NODES; do
        pid=$(cat "$W/$n/sidecar.pid")
        t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        fact "sidecar_cpu_ms_in_30s_$n" "$(( (t1 - ${before[$n]}) * 1000 / hz ))"
        fact "sidecar_rss_kib_$n" "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
    done
}

# ---------------------------------------------------------------- probes
# nostates: XfrmInNoStates summed over the nodes' kernels.
nostates() {
    local n sum=0 v
    for n in a b c; do
        v=$(ip netns exec "ns$n" awk '$1 == "XfrmInNoStates" {print $2}' /proc/net/xfrm_stat 2>/dev/null)
        sum=$((sum + ${v:-0}))
    done
    echo $sum
}

# probe_start STEP: ping every pair every 50 ms until probe_stop.
PAIRS="a:b a:c b:c"
probe_start() {
    local pr n p
    PROBES=()
    for pr in $PAIRS; do
        n=${pr%:*} p=${pr#*:}
        ip netns exec "ns$n" ping -n -i 0.05 -W 1 "192.0.0.$(idx "$p")" > "$W/probe-$1-$n$p.log" 2>&1 &
        PROBES+=($!)
    done
    NOSTATES_BEFORE=$(nostates)
    # Clear geneve (UDP 6081) and ESP on the underlay during the step.
    tcpdump -i br0 -n -U -w "$W/underlay-$1.pcap" 'udp port 6081 or esp' 2> "$W/tcpdump-$1.log" &
    TCPDUMP=$!
    for _ in $(seq 50); do grep -q listening "$W/tcpdump-$1.log" && break; sleep 0.1; done
}

# probe_stop STEP: lost = echo requests without a reply, except the last
# one sent (its reply may still be on the way when the probe stops). An
# error ping prints for a request ("Destination Host Unreachable") is no
# reply.
probe_stop() {
    local pr n p i=0 f sent lost
    sleep 0.5
    for pr in $PAIRS; do
        n=${pr%:*} p=${pr#*:}
        kill -INT "${PROBES[$i]}" 2>/dev/null; wait "${PROBES[$i]}" 2>/dev/null; i=$((i+1))
        f=$W/probe-$1-$n$p.log
        sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$f")
        lost=$(awk -v sent="${sent:-0}" '/bytes from .*icmp_seq=/ { split($0, a, "icmp_seq="); split(a[2], b, " "); got[b[1]] = 1 }
            END { l = 0; for (s = 1; s < sent; s++) if (!(s in got)) l++; print l }' "$f")
        fact "$1_sent_$n$p" "$((sent - 1))"
        fact "$1_lost_$n$p" "$lost"
    done
    kill -INT $TCPDUMP 2>/dev/null; wait $TCPDUMP 2>/dev/null
    # ESP packets the nodes' kernels dropped for an SPI they do not (yet) hold.
    fact "$1_xfrm_in_no_states" "$(( $(nostates) - NOSTATES_BEFORE ))"
    fact "$1_clear_geneve" "$(tcpdump -r "$W/underlay-$1.pcap" -n 'udp port 6081' 2>/dev/null | wc -l)"
    fact "$1_esp" "$(tcpdump -r "$W/underlay-$1.pcap" -n esp 2>/dev/null | wc -l)"
}

# ---------------------------------------------------------------- the test
run_test() {
    W=$1; mkdir -p "$W"
    trap cleanup EXIT
    ip link set lo up
    ip link add br0 type bridge; ip addr add 10.1.1.254/24 dev br0; ip link set br0 up
    export IPSECCA_SERVER=$SERVER IPSECCA_DATA_DIR=$W/ca
    "$IPSECCA" serve --data-dir "$W/ca" --listen $SERVER --server-name 10.1.1.254 > "$W/serve.log" 2>&1 & PIDS+=($!)
    wait_for 30 "$IPSECCA" ca show >/dev/null 2>&1 || { log "serve did not start"; return 1; }

    local n t0
    for n in $NODES; do
        node_up "$n" || { log "node $n did not start"; return 1; }
        "$IPSECCA" token create --node "node-$n" > "$W/$n/token" || return 1
        start_sidecar "$n"
    done
    for n in $NODES; do
        wait_for 60 test -s "$W/$n/state/current" || { log "sidecar $n did not enrol"; return 1; }
        fact "serial_$n" "$(current "$n")"
    done
    for n in $NODES; do tunnels "$n"; done
    t0=$(now)
    if wait_for 240 mesh_up $NODES; then fact mesh_up 1; else fact mesh_up 0; return 1; fi
    fact mesh_up_seconds "$(since "$t0")"
    wait_for 30 all_on_current
    for n in $NODES; do
        ovs-vsctl --db "unix:$W/$n/run/db.sock" get Open_vSwitch . other_config > "$W/other_config-$n.log"
        certutil -L -d "sql:$W/$n/nss" > "$W/nss-$n-1.log"
    done
    fact other_config_a "$(cat "$W/other_config-a.log")"

    # 1. Mesh up: every pair answers, the underlay carries only ESP.
    probe_start up; sleep 5; probe_stop up
    mesh_status up 60s
    sidecar_cost

    # 2. Forced rotation of one node, then of all.
    probe_start rotate1
    t0=$(now)
    "$IPSECCA" rotate --node node-a >> "$W/admin.log" 2>&1
    wait_for 90 sh -c "[ \"\$(cat $W/a/state/current)\" != $(current a) ]"
    fact serial_a_rotated "$(current a)"
    [ "$(current a)" != "$(grep '^serial_a=' "$FACTS" | cut -d= -f2)" ] || dump
    if wait_for 120 all_on_current; then fact rotate1_reauth 1; else fact rotate1_reauth 0; dump; fi
    fact rotate1_reauth_seconds "$(since "$t0")"
    wait_for 30 mesh_up $NODES
    probe_stop rotate1
    mesh_status rotate1 60s

    probe_start rotateall
    local before; before="$(current a) $(current b) $(current c)"
    t0=$(now)
    "$IPSECCA" rotate --all >> "$W/admin.log" 2>&1
    wait_for 120 sh -c "[ \"\$(cat $W/a/state/current) \$(cat $W/b/state/current) \$(cat $W/c/state/current)\" != \"$before\" ]"
    for n in $NODES; do wait_for 60 sh -c "! echo '$before' | grep -qw \$(cat $W/$n/state/current)"; done
    fact rotateall_serials "$(current a) $(current b) $(current c)"
    if wait_for 180 all_on_current; then fact rotateall_reauth 1; else fact rotateall_reauth 0; dump; fi
    fact rotateall_reauth_seconds "$(since "$t0")"
    wait_for 30 mesh_up $NODES
    probe_stop rotateall
    mesh_status rotateall 60s

    # 3. Same-key CA renewal.
    probe_start carenew
    t0=$(now)
    "$IPSECCA" ca renew >> "$W/admin.log" 2>&1
    for n in $NODES; do
        wait_for 90 sh -c "[ \$(grep -c 'BEGIN CERTIFICATE' $W/$n/state/ca.pem) -ge 2 ]"
    done
    sleep 3
    wait_for 60 mesh_up $NODES
    fact carenew_seconds "$(since "$t0")"
    probe_stop carenew
    for n in $NODES; do
        fact "carenew_bundle_$n" "$(grep -c 'BEGIN CERTIFICATE' "$W/$n/state/ca.pem")"
        certutil -L -d "sql:$W/$n/nss" > "$W/nss-$n-carenew.log"
        fact "carenew_nss_roots_$n" "$(grep -c ',,' "$W/nss-$n-carenew.log")"
    done
    mesh_status carenew 60s

    # 4. A CA key rollover to a new key (ECDSA P-384), phase by phase:
    #     trust (every NSS takes the new CA; node-c's sidecar is stopped and
    #     holds the phase back until it returns), issue (every node rotates
    #     onto the new key; node-b's sidecar is stopped and holds the phase
    #     back until it returns), retire (the old CA leaves every NSS).
    #     node-b stops once its NSS holds the new CA and while node-c still
    #     holds the trust phase, so it cannot rotate before it stops. When
    #     the old CA leaves a node's NSS, its sidecar restarts pluto with the
    #     SAs left in the kernel (a running pluto checks CRLs with the old
    #     CA, whatever key signed them), in the slot the CA gives it (one
    #     node every 45 s): step 5 revokes after the rollover.
    # Polled every 2 s: a CLI process every 0.2 s (wait_for) starves the
    # guest's single CPU and the probes with it.
    roll_status() { "$IPSECCA" ca rollover status --json 2>/dev/null; }
    roll_phase() { sleep 2; roll_status | grep -Eq "\"phase\": *\"$1\""; }
    roll_ready() { sleep 2; roll_status | grep -Eq '"ready": *true'; }
    roll_trusts() { sleep 2; roll_status | python3 -c 'import json, sys
d = json.load(sys.stdin)
sys.exit(0 if any(n.get("node") == sys.argv[1] and n.get("trustsNew") for n in d.get("nodes", [])) else 1)' "node-$1"; }
    probe_start rolltrust
    local trust_serials; trust_serials="$(current a) $(current b) $(current c)"
    kill "$(cat "$W/c/sidecar.pid")"
    t0=$(now)
    "$IPSECCA" ca rollover start --key-type ecdsa-p384 --spread 10s --json > "$W/rollover-start.json" \
        2>> "$W/admin.log"
    fact rollover_new "$(grep -Eo '"newSerial": *"[0-9a-f]+"' "$W/rollover-start.json" | grep -Eo '[0-9a-f]{8,}')"
    wait_for 90 roll_trusts b
    sleep 6 # a few report rounds: node-a and node-b hold the new CA, node-c cannot
    kill "$(cat "$W/b/sidecar.pid")"
    roll_status > "$W/rollover-held-trust.json"
    fact rolltrust_held "$(grep -Eq '"phase": *"trust"' "$W/rollover-held-trust.json" && echo 1 || echo 0)"
    fact rolltrust_held_on_c "$(grep -c 'node node-c: its NSS database does not hold the new CA' \
        "$W/rollover-held-trust.json")"
    fact rolltrust_held_on_ab "$(grep -c 'node node-[ab]:' "$W/rollover-held-trust.json")"
    start_sidecar c
    if wait_for 120 roll_phase issue; then fact rolltrust_done 1; else fact rolltrust_done 0; dump; fi
    fact rolltrust_seconds "$(since "$t0")"
    roll_status > "$W/rollover-issue-began.json"
    # The phase switch is seen up to 2 s late: a node due at once may have
    # rotated (a hand-over's loss) before the trust probe stops.
    probe_stop rolltrust
    fact rolltrust_rotated "$([ "$(current a) $(current b) $(current c)" = "$trust_serials" ] && echo 0 || echo 1)"
    mesh_status rolltrust

    probe_start rollissue
    t0=$(now)
    sleep 25 # the spread (10 s) and a few report rounds: node-a and node-c are on the new key
    roll_status > "$W/rollover-held.json"
    fact rollissue_held "$(roll_ready && echo 0 || echo 1)"
    fact rollissue_held_on_b "$(grep -c 'node node-b: its certificate' "$W/rollover-held.json")"
    start_sidecar b
    if wait_for 180 roll_ready; then fact rollissue_done 1; else fact rollissue_done 0; dump; fi
    fact rollissue_seconds "$(since "$t0")"
    roll_status > "$W/rollover-issue-complete.json"
    wait_for 60 all_on_current
    wait_for 30 mesh_up $NODES
    probe_stop rollissue
    mesh_status rollissue 60s

    probe_start rollretire
    t0=$(now)
    "$IPSECCA" ca rollover finish --wait 300s > "$W/rollover-finish.log" 2>&1
    fact rollretire_rc $?
    fact rollretire_seconds "$(since "$t0")"
    for n in $NODES; do wait_for 180 grep -q 'restarted pluto' "$W/$n/sidecar.log"; done
    fact rollretire_restarted_seconds "$(since "$t0")"
    wait_for 60 mesh_up $NODES
    sleep 3
    probe_stop rollretire
    for n in $NODES; do fact "rollretire_pluto_restarted_$n" "$(grep -c 'restarted pluto' "$W/$n/sidecar.log")"; done
    for n in $NODES; do
        certutil -L -d "sql:$W/$n/nss" -n ovs_cert_cacert -a > "$W/nss-$n-rollretire.pem" 2>&1
        fact "rollretire_nss_roots_$n" "$(grep -c 'BEGIN CERTIFICATE' "$W/nss-$n-rollretire.pem")"
        fact "rollretire_nss_root_$n" "$(openssl x509 -in "$W/nss-$n-rollretire.pem" -noout -serial | cut -d= -f2 |
            tr 'A-F' 'a-f' | sed 's/^0*//')"
        fact "rollretire_bundle_$n" "$(grep -c 'BEGIN CERTIFICATE' "$W/$n/state/ca.pem")"
    done
    mesh_status rollretire 60s

    # 5. Revocation of node-c, after the key rollover (the CRL is signed by
    #    the new key): its tunnels are refused; a-b keeps going.
    PAIRS="a:b a:c b:c"
    probe_start revoke
    t0=$(now)
    "$IPSECCA" node revoke node-c --reason e2e >> "$W/admin.log" 2>&1
    REVOKED=c
    local serial_c; serial_c=$(current c)
    # The sidecar notes the revoked serials of the CRL it imported.
    for n in a b; do wait_for 60 sh -c "head -1 $W/$n/state/crl.der | tr , '\n' | grep -qx $serial_c"; done
    fact revoke_crl_seconds "$(since "$t0")"
    # Refused: no SA with node-c on a or b, and still none two report rounds
    # later (until the peers' NSS sees the CRL, node-c authenticates again).
    refused() { ! sa_peers a | grep -qw c && ! sa_peers b | grep -qw c; }
    stably_refused() { refused && sleep 4 && refused && sleep 4 && refused; }
    if wait_for 300 stably_refused; then fact revoke_refused 1; else fact revoke_refused 0; dump; fi
    fact revoke_refused_seconds "$(awk -v s="$(since "$t0")" 'BEGIN { printf "%.1f", s - 8 }')"
    sleep 10
    fact revoke_still_refused "$(refused && echo 1 || echo 0)"
    probe_stop revoke
    mesh_status revoke

    # 6. A sidecar killed while it rotates, and ovs-monitor-ipsec killed
    #    while a peer rotates: the next pass finishes both.
    # node-c is gone for good: its tunnels go (the CA forgets it too).
    for n in a b; do
        ovs-vsctl --db "unix:$W/$n/run/db.sock" del-port br-ipsec gnv-c
    done
    "$IPSECCA" node forget node-c >> "$W/admin.log" 2>&1
    NODES="a b" PAIRS="a:b"
    probe_start kill
    t0=$(now)
    kill -9 "$(cat "$W/a/sidecar.pid")"
    "$IPSECCA" rotate --node node-a >> "$W/admin.log" 2>&1
    "$IPSECCA" rotate --node node-b >> "$W/admin.log" 2>&1
    kill -9 "$(cat "$W/a/run/ovs-monitor-ipsec.pid")"
    sleep 2
    start_sidecar a
    sleep 3
    start_monitor a
    if wait_for 120 all_on_current; then fact kill_reauth 1; else fact kill_reauth 0; dump; fi
    fact kill_reauth_seconds "$(since "$t0")"
    wait_for 30 mesh_up $NODES
    probe_stop kill
    mesh_status kill 60s
    return 0
}

# ---------------------------------------------------------------- UML guest
uml_guest() {
    trap 'echo o > /proc/sysrq-trigger; sleep 10' EXIT
    mount -t proc proc /proc; mount -t sysfs sys /sys
    mount -t devtmpfs dev /dev 2>/dev/null
    mount -t tmpfs tmpfs /run
    mkdir -p /dev/shm /dev/pts; mount -t tmpfs tmpfs /dev/shm
    mkdir -p "$OUT/work"; mount -t tmpfs tmpfs "$OUT/work"
    echo "$OUT/uml/modprobe" > /proc/sys/kernel/modprobe
    for m in xfrm_user esp4 veth bridge openvswitch vport-geneve geneve; do
        "$OUT/uml/modprobe" "$m" || log "modprobe $m failed"
    done
    # ovs-vswitchd 3.1 counts the CPUs only once its monotonic clock passed
    # 10 s (lib/ovs-thread.c count_cpu_cores: last_updated = 0): started
    # earlier it runs with no upcall handler and its datapath passes no
    # packet, for good. The guest boots faster than that.
    while [ "$(cut -d. -f1 /proc/uptime)" -lt 11 ]; do sleep 0.5; done
    # First GCM SA loads gcm/ctr/ghash in the guest kernel; do it before pluto.
    ip xfrm state add src 10.1.1.1 dst 10.1.1.2 proto esp spi 0x1000 mode transport \
        aead 'rfc4106(gcm(aes))' 0x$(printf '%072d' 0) 128
    ip xfrm state flush
    ( run_test "$OUT/work" ); echo $? > "$OUT/result"
}

uml_guest > "$OUT/guest.log" 2>&1
