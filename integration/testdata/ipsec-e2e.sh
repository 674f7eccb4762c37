#!/bin/bash
# ipsec-e2e.sh - libreswan IKEv2 + ESP (AES-GCM-16-256, transport) between two
# network namespaces whose certificates ipsecca issued and its sidecar put in
# their NSS databases; then a forced rotation; then a node with a certificate
# from another CA, which must be refused. Driven by integration/libreswan_test.go.
#
# Environment: IPSECCA (binary), E2E_OUT (results and logs, on the host),
# E2E_STAGE=native|guest. Results: $E2E_OUT/result (exit status) and
# $E2E_OUT/facts (KEY=VALUE lines the Go test asserts on), logs in $E2E_OUT/logs.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
OUT=${E2E_OUT:?} STAGE=${E2E_STAGE:-native}
A_IP=198.18.0.1 B_IP=198.18.0.2
PLUTO=/usr/libexec/ipsec/pluto
FACTS=$OUT/facts
mkdir -p "$OUT/logs"; : > "$FACTS"

log() { echo "[e2e:$STAGE] $*"; }
fact() { echo "$1=$2" >> "$FACTS"; log "$1=$2"; }

PIDS=()
cleanup() {
    for n in nodeA nodeB; do
        [ -S "$W/$n/run/pluto.ctl" ] && ipsec whack --rundir "$W/$n/run" --shutdown >/dev/null 2>&1
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for n in nodeA nodeB; do cp "$W/$n/pluto.log" "$OUT/logs/$n-pluto.log" 2>/dev/null; done
    cp "$W"/*.log "$OUT/logs/" 2>/dev/null
    ip netns del nodeA 2>/dev/null; ip netns del nodeB 2>/dev/null
}

# start_pluto NODE: one pluto in the node's namespace with its config.
start_pluto() {
    local n=$1 d=$W/$1
    rm -f "$d/run/pluto.ctl" "$d/run/pluto.pid"
    ip netns exec "$n" $PLUTO --config "$d/ipsec.conf" --rundir "$d/run" --nssdir "$d/nss" \
        --secretsfile "$d/ipsec.secrets" --ipsecdir "$d" --nofork --stderrlog >> "$d/pluto.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$d/run/pluto.ctl" ] && return 0; sleep 0.1; done
    log "pluto for $n did not start"; return 1
}

stop_pluto() {
    ipsec whack --rundir "$W/$1/run" --shutdown >/dev/null 2>&1
    for _ in $(seq 50); do [ -S "$W/$1/run/pluto.ctl" ] || return 0; sleep 0.1; done
}

# wait_sa: until nodeA reports an ESP Child SA (or a deadline).
wait_sa() {
    for _ in $(seq ${1:-150}); do
        ipsec whack --rundir "$W/nodeA/run" --trafficstatus 2>/dev/null | grep -q 'type=ESP' && return 0
        sleep 0.2
    done
    return 1
}

# traffic TAG: ping across while capturing on nodeB's side; ESP vs cleartext ICMP.
traffic() {
    local tag=$1 pcap=$W/$1.pcap
    ip netns exec nodeB tcpdump -i vethB -n -U -c 10 -w "$pcap" 'esp or icmp' 2> "$W/tcpdump-$tag.log" &
    local tp=$!
    for _ in $(seq 50); do grep -q listening "$W/tcpdump-$tag.log" && break; sleep 0.2; done
    ip netns exec nodeA ping -c 5 -i 0.2 -W 2 $B_IP > "$W/ping-$tag.log" 2>&1
    fact "${tag}_ping_rc" $?
    for _ in $(seq 50); do kill -0 $tp 2>/dev/null || break; sleep 0.2; done
    kill -INT $tp 2>/dev/null; wait $tp 2>/dev/null
    fact "${tag}_esp" "$(tcpdump -r "$pcap" -n esp 2>/dev/null | wc -l)"
    fact "${tag}_icmp" "$(tcpdump -r "$pcap" -n icmp 2>/dev/null | wc -l)"
    cp "$pcap" "$OUT/logs/" 2>/dev/null
}

# keyid CERT: libreswan's key id of an RSA certificate's key (the first 9
# base64 characters of the RFC 3110 key: exponent 65537, then modulus), as
# pluto logs it when it verifies a peer ("aka *AwEAA...").
keyid() {
    local m; m=$(openssl x509 -in "$1" -noout -modulus | cut -d= -f2)
    printf '%b' "$(echo "03010001$m" | sed 's/../\\x&/g')" | base64 -w0 | cut -c1-9
}

# peer_serial TAG: which of node-a's certificates nodeB verified last,
# matched by key id against every certificate node-a's sidecar held.
peer_serial() {
    local seen c
    seen=$(grep -o "trying '@node-a' aka \*[A-Za-z0-9+/]*" "$W/nodeB/pluto.log" | tail -1 | sed 's/.*\*//')
    fact "${1}_peer_keyid" "$seen"
    for c in "$W"/nodeA/state/versions/*.pem; do
        case $c in *-key.pem) continue ;; esac
        if [ "$(keyid "$c")" = "$seen" ]; then fact "${1}_peer_serial" "$(basename "$c" .pem)"; fi
    done
}

# sa_facts TAG: what the kernel and pluto say about the SA.
sa_facts() {
    local tag=$1
    ip -n nodeA xfrm state > "$W/xfrm-$tag.log"
    fact "${tag}_aead" "$(grep -m1 -o 'aead rfc4106(gcm(aes)) 0x[0-9a-f]* [0-9]*' "$W/xfrm-$tag.log" | awk '{print $2, (length($3)-2)*4, $4}')"
    fact "${tag}_mode" "$(grep -m1 -o 'mode [a-z]*' "$W/xfrm-$tag.log" | awk '{print $2}')"
    ipsec whack --rundir "$W/nodeA/run" --trafficstatus > "$W/traffic-$tag.log" 2>&1
    ipsec whack --rundir "$W/nodeB/run" --listpubkeys > "$W/pubkeys-$tag.log" 2>&1
    ipsec whack --rundir "$W/nodeB/run" --status > "$W/status-$tag.log" 2>&1
    # The certificate nodeB authenticated nodeA with, as pluto logged it.
    fact "${tag}_peer_auth" "$(grep -o "authenticated peer.*" "$W/nodeB/pluto.log" | tail -1 | tr -d '=')"
    fact "${tag}_child" "$(grep -o 'established Child SA.*' "$W/nodeA/pluto.log" | tail -1 | grep -o 'xfrm=[A-Z_0-9]*')"
    peer_serial "$tag"
}

run_test() {
    W=$1; mkdir -p "$W"
    trap cleanup EXIT
    ip link set lo up
    local CA=$W/ca ROGUE=$W/rogue
    export IPSECCA_SERVER=127.0.0.1:18443 IPSECCA_DATA_DIR=$CA
    "$IPSECCA" serve --data-dir "$CA" --listen 127.0.0.1:18443 > "$W/serve.log" 2>&1 & PIDS+=($!)
    "$IPSECCA" serve --data-dir "$ROGUE" --listen 127.0.0.1:18444 > "$W/rogue-serve.log" 2>&1 & PIDS+=($!)
    for _ in $(seq 100); do
        "$IPSECCA" ca show >/dev/null 2>&1 && IPSECCA_SERVER=127.0.0.1:18444 IPSECCA_DATA_DIR=$ROGUE "$IPSECCA" ca show >/dev/null 2>&1 && break
        sleep 0.2
    done

    # Certificates: issued by ipsecca, delivered by its sidecar.
    for n in a b; do
        local N=node$(echo $n | tr a-z A-Z) d=$W/node$(echo $n | tr a-z A-Z)
        mkdir -p "$d/run"
        "$IPSECCA" token create --node node-$n > "$d/token" || return 1
        "$IPSECCA" sidecar --once --server 127.0.0.1:18443 --ca-file "$CA/ca.pem" --node node-$n \
            --token-file "$d/token" --nss-dir "$d/nss" --state-dir "$d/state" >> "$W/sidecar.log" 2>&1 || { log "sidecar node-$n failed"; return 1; }
        fact "node_${n}_serial" "$(cat "$d/state/current")"
    done
    certutil -L -d "sql:$W/nodeA/nss" > "$W/nss-nodeA.log"

    # Two nodes: namespaces joined by a veth pair.
    ip netns add nodeA; ip netns add nodeB
    ip link add vethA netns nodeA type veth peer name vethB netns nodeB
    ip -n nodeA addr add $A_IP/24 dev vethA; ip -n nodeB addr add $B_IP/24 dev vethB
    for n in nodeA nodeB; do ip -n $n link set lo up; done
    ip -n nodeA link set vethA up; ip -n nodeB link set vethB up

    # libreswan config: conns from `ipsecca config libreswan`.
    for n in a b; do
        local d=$W/node$(echo $n | tr a-z A-Z) me=node-$n peer addr paddr auto
        if [ $n = a ]; then peer=node-b addr=$A_IP paddr=$B_IP auto=start; else peer=node-a addr=$B_IP paddr=$A_IP auto=add; fi
        : > "$d/ipsec.secrets"; chmod 600 "$d/ipsec.secrets"
        { printf 'config setup\n    nssdir=%s\n    secretsfile=%s\n    ipsecdir=%s\n    dumpdir=%s\n' "$d/nss" "$d/ipsec.secrets" "$d" "$d/run"
          [ $n = b ] && printf '    plutodebug=base\n'; echo
          "$IPSECCA" config libreswan --node $me --node-address $addr --peer $peer=$paddr --auto $auto | sed 's/^    auto=.*/&\n    leftupdown=%disabled/'
        } > "$d/ipsec.conf"
    done
    cp "$W/nodeA/ipsec.conf" "$W/nodeA-ipsec.conf.log"

    # 1. IKEv2 + ESP with the issued certificates.
    start_pluto nodeB && start_pluto nodeA || return 1
    if wait_sa; then fact sa1_up 1; else fact sa1_up 0; return 1; fi
    sa_facts sa1
    traffic t1

    # 2. Forced rotation of node-a: the sidecar delivers the new pair, pluto
    #    restarts, and nodeB authenticates nodeA with the new certificate.
    "$IPSECCA" rotate --node node-a >> "$W/sidecar.log" 2>&1
    sleep 0.5
    "$IPSECCA" sidecar --once --server 127.0.0.1:18443 --ca-file "$CA/ca.pem" --node node-a \
        --token-file "$W/nodeA/token" --nss-dir "$W/nodeA/nss" --state-dir "$W/nodeA/state" >> "$W/sidecar.log" 2>&1 || return 1
    fact node_a_serial_rotated "$(cat "$W/nodeA/state/current")"
    # Keep the old version so the peer's key id maps back to either serial.
    cp "$W/nodeA/state/versions/$(grep node_a_serial= "$FACTS" | cut -d= -f2).pem" "$W/first-node-a.pem" 2>/dev/null
    fact node_a_nss_certs "$(certutil -L -d "sql:$W/nodeA/nss" | grep -c ovs_certkey_node-a)"
    stop_pluto nodeA
    ip -n nodeA xfrm state flush; ip -n nodeB xfrm state flush
    start_pluto nodeA || return 1
    if wait_sa; then fact sa2_up 1; else fact sa2_up 0; return 1; fi
    sa_facts sa2
    traffic t2
    ipsec whack --rundir "$W/nodeB/run" --listcerts > "$W/listcerts-nodeB.log" 2>&1

    # 3. Revocation: node-a is revoked; node-b's sidecar imports the CRL
    #    into its NSS database; pluto on node-b refuses node-a from then on.
    "$IPSECCA" node revoke node-a --reason e2e >> "$W/sidecar.log" 2>&1
    "$IPSECCA" sidecar --once --server 127.0.0.1:18443 --ca-file "$CA/ca.pem" --node node-b \
        --token-file "$W/nodeB/token" --nss-dir "$W/nodeB/nss" --state-dir "$W/nodeB/state" >> "$W/sidecar.log" 2>&1 || return 1
    crlutil -L -d "sql:$W/nodeB/nss" > "$W/crl-nodeB.log" 2>&1
    fact crl_in_nodeB "$(grep -c ovs_cert_cacert "$W/crl-nodeB.log")"
    stop_pluto nodeA; stop_pluto nodeB
    ip -n nodeA xfrm state flush; ip -n nodeB xfrm state flush
    local before_rev; before_rev=$(wc -l < "$W/nodeB/pluto.log")
    start_pluto nodeB && start_pluto nodeA || return 1
    if wait_sa 75; then fact revoked_sa_up 1; else fact revoked_sa_up 0; fi
    fact revoked_refusal "$(tail -n +$((before_rev+1)) "$W/nodeB/pluto.log" | grep -m1 -oiE '.*revoked.*' | sed 's/^[^:]*: //' | tr -d '=')"

    # 4. node-a with a certificate from another CA: nodeB must refuse it.
    stop_pluto nodeA
    ip -n nodeA xfrm state flush; ip -n nodeB xfrm state flush
    local R=$W/nodeA-rogue
    mkdir -p "$R"
    IPSECCA_SERVER=127.0.0.1:18444 IPSECCA_DATA_DIR=$ROGUE "$IPSECCA" token create --node node-a > "$R/token"
    "$IPSECCA" sidecar --once --server 127.0.0.1:18444 --ca-file "$ROGUE/ca.pem" --node node-a \
        --token-file "$R/token" --nss-dir "$R/nss" --state-dir "$R/state" >> "$W/sidecar.log" 2>&1 || return 1
    rm -rf "$W/nodeA/nss"; cp -r "$R/nss" "$W/nodeA/nss"
    : > "$W/nodeB/pluto.log.mark"; local before; before=$(wc -l < "$W/nodeB/pluto.log")
    start_pluto nodeA || return 1
    if wait_sa 75; then fact rogue_sa_up 1; else fact rogue_sa_up 0; fi
    fact rogue_refusal "$(tail -n +$((before+1)) "$W/nodeB/pluto.log" | grep -m1 -oiE 'certificate.*(not|fail|invalid|unknown|issuer|verify).*|no .*authenticat.*|AUTHENTICATION_FAILED|rejected.*' | tr -d '=')"
    subordinate || return 1
    return 0
}

# subordinate: ipsecca as a subordinate CA under an organisation's root
# made here by openssl. Both nodes' certificates chain node -> subordinate
# -> root, and their NSS holds the root as the trust anchor and the
# subordinate as an intermediate. Then node-a presents a certificate from a
# sibling subordinate of the same root (another subject): NSS validates
# its chain, and libreswan's rightca=%same refuses it, because the issuer's
# subject is not the one that issued node-b's own certificate.
subordinate() {
    stop_pluto nodeA; stop_pluto nodeB
    ip -n nodeA xfrm state flush; ip -n nodeB xfrm state flush
    local ORG=$W/org SUB=$W/sub n d
    mkdir -p "$ORG"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ORG/root.key" \
        -out "$ORG/root.pem" -days 7300 -subj "/O=Example Corp/CN=Example Root" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>> "$W/org.log"
    printf '%s\n' basicConstraints=critical,CA:TRUE,pathlen:0 keyUsage=critical,keyCertSign,cRLSign \
        subjectKeyIdentifier=hash authorityKeyIdentifier=keyid > "$ORG/sub.ext"
    "$IPSECCA" init --subordinate --data-dir "$SUB" >> "$W/sub-init.log" 2>&1 || { log "init --subordinate"; return 1; }
    openssl x509 -req -in "$SUB/ca.csr" -CA "$ORG/root.pem" -CAkey "$ORG/root.key" -CAcreateserial -days 3650 \
        -extfile "$ORG/sub.ext" -out "$ORG/sub.pem" 2>> "$W/org.log"
    "$IPSECCA" ca import "$ORG/sub.pem" --chain "$ORG/root.pem" --data-dir "$SUB" >> "$W/sub-init.log" 2>&1 ||
        { log "ca import"; return 1; }
    "$IPSECCA" serve --data-dir "$SUB" --listen 127.0.0.1:18445 > "$W/sub-serve.log" 2>&1 & PIDS+=($!)
    local S="IPSECCA_SERVER=127.0.0.1:18445 IPSECCA_DATA_DIR=$SUB"
    for _ in $(seq 100); do env $S "$IPSECCA" ca show >/dev/null 2>&1 && break; sleep 0.2; done
    for n in a b; do
        d=$W/node$(echo $n | tr a-z A-Z)
        rm -rf "$d/nss" "$d/state"
        env $S "$IPSECCA" token create --node node-$n > "$d/token" || return 1
        "$IPSECCA" sidecar --once --server 127.0.0.1:18445 --ca-file "$SUB/ca.pem" --node node-$n \
            --token-file "$d/token" --nss-dir "$d/nss" --state-dir "$d/state" >> "$W/sidecar.log" 2>&1 || return 1
        certutil -L -d "sql:$d/nss" > "$W/nss-sub-node$n.log"
        fact "sub_nss_$n" "$(awk 'NR > 4 && NF { print $NF " " $1 }' "$W/nss-sub-node$n.log" | sort | tr '\n' ';')"
        certutil -V -u V -d "sql:$d/nss" -n "ovs_certkey_node-$n" > "$W/sub-verify-$n.log" 2>&1
        fact "sub_certutil_v_$n" $?
        openssl verify -CAfile "$ORG/root.pem" -untrusted "$ORG/sub.pem" "$d/state/node.pem" > "$W/sub-openssl-$n.log" 2>&1
        fact "sub_openssl_verify_$n" $?
    done
    start_pluto nodeB && start_pluto nodeA || return 1
    if wait_sa; then fact sub_sa_up 1; else fact sub_sa_up 0; return 0; fi
    sa_facts sub
    traffic tsub

    # The sibling: same root, subject CN=sibling subordinate CA; node-a's
    # certificate from it, made as ipsecca's profile makes one.
    stop_pluto nodeA
    ip -n nodeA xfrm state flush; ip -n nodeB xfrm state flush
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ORG/sib.key" -out "$ORG/sib.csr" \
        -subj "/O=ipsecca/CN=sibling subordinate CA" 2>> "$W/org.log"
    openssl x509 -req -in "$ORG/sib.csr" -CA "$ORG/root.pem" -CAkey "$ORG/root.key" -CAcreateserial -days 3650 \
        -extfile "$ORG/sub.ext" -out "$ORG/sib.pem" 2>> "$W/org.log"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$ORG/node.key" -out "$ORG/node.csr" \
        -subj "/O=ipsecca/CN=node-a" 2>> "$W/org.log"
    printf '%s\n' subjectAltName=DNS:node-a keyUsage=critical,digitalSignature,keyEncipherment \
        extendedKeyUsage=serverAuth,clientAuth,1.3.6.1.5.5.7.3.17 > "$ORG/node.ext"
    openssl x509 -req -in "$ORG/node.csr" -CA "$ORG/sib.pem" -CAkey "$ORG/sib.key" -CAcreateserial -days 365 \
        -extfile "$ORG/node.ext" -out "$ORG/node.pem" 2>> "$W/org.log"
    d=$W/nodeA
    rm -rf "$d/nss"; mkdir -p "$d/nss"
    certutil -N -d "sql:$d/nss" --empty-password
    certutil -A -d "sql:$d/nss" -n ovs_cert_cacert -t CT,, -a -i "$ORG/root.pem"
    certutil -A -d "sql:$d/nss" -n sibling-ca -t ,, -a -i "$ORG/sib.pem"
    openssl pkcs12 -export -in "$ORG/node.pem" -inkey "$ORG/node.key" -name ovs_certkey_node-a -passout pass: \
        -out "$ORG/node.p12" 2>> "$W/org.log"
    pk12util -i "$ORG/node.p12" -d "sql:$d/nss" -W "" >> "$W/org.log" 2>&1
    # nodeB holds the sibling as an intermediate too, so that NSS can build
    # the chain whatever pluto sends: NSS validates the sibling's node ...
    certutil -A -d "sql:$W/nodeB/nss" -n sibling-ca -t ,, -a -i "$ORG/sib.pem"
    certutil -A -d "sql:$W/nodeB/nss" -n sibling-node-a -t ,, -a -i "$ORG/node.pem"
    certutil -V -u V -d "sql:$W/nodeB/nss" -n sibling-node-a > "$W/sibling-verify.log" 2>&1
    fact sibling_certutil_v $?
    certutil -D -d "sql:$W/nodeB/nss" -n sibling-node-a
    # ... and pluto refuses it: rightca=%same.
    local before; before=$(wc -l < "$W/nodeB/pluto.log")
    start_pluto nodeA || return 1
    if wait_sa 75; then fact sibling_sa_up 1; else fact sibling_sa_up 0; fi
    tail -n +$((before+1)) "$W/nodeB/pluto.log" > "$W/sibling-pluto-nodeB.log"
    # nodeB logs at plutodebug=base: its NSS verified the chain up to the
    # root, then rightca=%same (trusted_ca: the sibling is no issuer of ours)
    # refused it.
    fact sibling_pluto_chain_valid "$(grep -c 'certificate is valid (profile IPsec)' "$W/sibling-pluto-nodeB.log")"
    fact sibling_rightca "$(grep -m1 -o "trusted_ca: returning untrusted.*" "$W/sibling-pluto-nodeB.log")"
    # pluto's own lines (not its debug lines, "| ..."), the refusal first.
    grep -vE '^[A-Z][a-z]{2} [ 0-9]{2} [0-9:.]+: \|' "$W/sibling-pluto-nodeB.log" > "$W/sibling-refusal.log"
    fact sibling_refusal "$(grep -m1 -iE 'no suitable connection|authentication failed|AUTHENTICATION_FAILED|not trusted|does not match|failed to match|rejected|no connection' \
        "$W/sibling-refusal.log" | sed -E 's/^[A-Z][a-z]{2} [ 0-9]{2} [0-9:.]+: //' | tr -d '=' | cut -c1-200)"
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
    for m in xfrm_user esp4 veth; do "$OUT/uml/modprobe" "$m"; done
    ip link set lo up
    # First GCM SA loads gcm/ctr/ghash in the guest kernel; do it before pluto.
    ip xfrm state add src $A_IP dst $B_IP proto esp spi 0x1000 mode transport \
        aead 'rfc4106(gcm(aes))' 0x$(printf '%072d' 0) 128
    ip xfrm state flush
    ( run_test "$OUT/work" ); echo $? > "$OUT/result"
}

case $STAGE in
guest)  uml_guest ;;
native) ( run_test "$OUT/work" ); rc=$?; echo $rc > "$OUT/result"; exit $rc ;;
esac
