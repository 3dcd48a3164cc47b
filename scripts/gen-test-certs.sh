#!/bin/sh
# gen-test-certs.sh OUTDIR [-v] - test PKI for tern's TLS tests (openssl CLI).
#
# Idempotent: if OUTDIR/.complete exists nothing is regenerated. Prints
# nothing on success unless -v. Every key is ECDSA P-256 unless named rsa*.
# Server leaves carry SAN DNS:localhost, DNS:mx.test, DNS:*.wild.test,
# IP:127.0.0.1 and EKU serverAuth unless noted.
#
# Files (stable names; tests and the sink rely on them):
#   ca.pem ca.key               test root CA (trust this one)
#   inter.pem inter.key         intermediate CA signed by the root
#   server.pem                  leaf + intermediate chain      (key: server.key)
#   server-leaf.pem             the leaf alone
#   server.key
#   wrongname.pem/.key          leaf for DNS:other.test only, + intermediate
#   expired.pem/.key            leaf valid 2019-2020, + intermediate
#   notyet.pem/.key             leaf valid 2099-2100, + intermediate
#   selfsigned.pem/.key         self-signed leaf (not a CA)
#   untrusted-ca.pem            a root nobody trusts
#   untrusted.pem/.key          leaf signed by untrusted-ca (leaf only)
#   nointer.pem/.key            leaf signed by the intermediate, chain
#                               without the intermediate
#   rsa1024.pem/.key            RSA-1024 leaf + intermediate
#   rsa2048.pem/.key            RSA-2048 leaf + intermediate
#   client.pem/.key             client certificate (EKU clientAuth, CN
#                               client.test) signed directly by the root
#
# Certificates that are wrong on purpose (tls/cert_check.c tests):
#   sha1.pem/.key               leaf signed with SHA-1 by the intermediate,
#                               + intermediate
#   sha1inter.pem/.key          leaf (SHA-256) + an intermediate that the
#                               root signed with SHA-1
#   sha1root.pem/.key           leaf + its self-signed root, the root signed
#                               with SHA-1 (only the root; that is harmless)
#   sha1root-ca.pem             that root alone (a trust store for it)
#   md5.pem/.key                RSA-2048 leaf signed with MD5 by an RSA root
#                               that is not exported (leaf only)
#   ec521.pem/.key              EC P-521 leaf + intermediate
#   dsa.pem/.key                DSA-2048 leaf + intermediate
#   soon.pem/.key               leaf that expires 10 days after generation,
#                               + intermediate
#   client-serverauth.pem/.key  client certificate like client.pem but with
#                               EKU serverAuth only
#   nosan.pem/.key              leaf with CN=mx.test and no subjectAltName,
#                               + intermediate
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 OUTDIR [-v]" >&2
    exit 2
fi
OUT=$1
VERBOSE=0
[ "${2:-}" = "-v" ] && VERBOSE=1

if [ -f "$OUT/.complete" ]; then
    [ $VERBOSE = 1 ] && echo "gen-test-certs: $OUT already complete"
    exit 0
fi
mkdir -p "$OUT"
FINAL=$OUT
W=$FINAL/.work
rm -rf "$W"
mkdir -p "$W/out"
# Everything is made in a staging dir and moved into place at the end, so
# an interrupted run never leaves a half-made set behind.
OUT=$W/out
LOG=$W/log
SERVER_SAN="DNS:localhost,DNS:mx.test,DNS:*.wild.test,IP:127.0.0.1"

run() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "gen-test-certs: failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

# One openssl-ca database per signing CA; the config reads SAN/EKU from
# the environment so one file serves every leaf.
cat >"$W/ca.cnf" <<'EOF'
[ ca ]
default_ca = tern_ca
[ tern_ca ]
dir = $ENV::CADIR
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir/new
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = $ENV::EKU
subjectAltName = $ENV::SAN
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ leaf_nosan_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ inter_ext ]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ req ]
distinguished_name = dn
[ dn ]
EOF

newdb() {
    mkdir -p "$W/$1/new"
    : >"$W/$1/index.txt"
    echo 1000 >"$W/$1/serial"
}

eckey() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
rsakey() { run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:"$2" -out "$1"; }
dsakey() {
    run openssl genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:2048 -out "$W/dsa.param"
    run openssl genpkey -paramfile "$W/dsa.param" -out "$1"
}

# root CN KEY OUT
selfsign_ca() {
    run openssl req -config "$W/ca.cnf" -x509 -new -key "$2" -subj "/CN=$1" \
        -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -out "$3"
}

# sign CADB CACERT CAKEY KEY CN OUT EXTSECTION [DATES...]
# DATES: -days N, or -startdate X -enddate Y
sign() {
    db=$1 cacert=$2 cakey=$3 key=$4 cn=$5 out=$6 ext=$7
    shift 7
    run openssl req -config "$W/ca.cnf" -new -key "$key" -subj "/CN=$cn" -out "$W/req.csr"
    CADIR=$W/$db run openssl ca -config "$W/ca.cnf" -batch -notext \
        -cert "$cacert" -keyfile "$cakey" -extensions "$ext" \
        -in "$W/req.csr" -out "$out" "$@"
}

export CADIR="$W/root" SAN="$SERVER_SAN" EKU="serverAuth"
newdb root
newdb inter
newdb untrusted

eckey "$OUT/ca.key"
selfsign_ca "tern test root" "$OUT/ca.key" "$OUT/ca.pem"
eckey "$OUT/inter.key"
sign root "$OUT/ca.pem" "$OUT/ca.key" "$OUT/inter.key" "tern test intermediate" \
    "$OUT/inter.pem" inter_ext -days 3650

# leaf_from_inter NAME KEYTYPE CN [DATES...]: NAME.pem = leaf + inter
leaf_from_inter() {
    name=$1 ktype=$2 cn=$3
    shift 3
    case $ktype in
    ec) eckey "$OUT/$name.key" ;;
    ec521) run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out "$OUT/$name.key" ;;
    dsa) dsakey "$OUT/$name.key" ;;
    rsa*) rsakey "$OUT/$name.key" "${ktype#rsa}" ;;
    esac
    sign inter "$OUT/inter.pem" "$OUT/inter.key" "$OUT/$name.key" "$cn" \
        "$W/$name-leaf.pem" leaf_ext "$@"
    cat "$W/$name-leaf.pem" "$OUT/inter.pem" >"$OUT/$name.pem"
}

leaf_from_inter server ec mx.test -days 3650
cp "$W/server-leaf.pem" "$OUT/server-leaf.pem"
cp "$W/server-leaf.pem" "$OUT/nointer.pem"
cp "$OUT/server.key" "$OUT/nointer.key"

SAN="DNS:other.test" leaf_from_inter wrongname ec other.test -days 3650
leaf_from_inter expired ec mx.test -startdate 20190101000000Z -enddate 20200101000000Z
leaf_from_inter notyet ec mx.test -startdate 20990101000000Z -enddate 21000101000000Z
leaf_from_inter rsa1024 rsa1024 mx.test -days 3650
leaf_from_inter rsa2048 rsa2048 mx.test -days 3650

# Self-signed leaf: not a CA, so it can only ever be trusted by pinning.
eckey "$OUT/selfsigned.key"
run openssl req -config "$W/ca.cnf" -x509 -new -key "$OUT/selfsigned.key" -subj "/CN=mx.test" \
    -days 3650 -sha256 -addext "basicConstraints=critical,CA:FALSE" \
    -addext "subjectAltName=$SERVER_SAN" -addext "extendedKeyUsage=serverAuth" \
    -out "$OUT/selfsigned.pem"

# Leaf from a CA that is in nobody's trust store.
eckey "$W/untrusted-ca.key"
selfsign_ca "tern untrusted root" "$W/untrusted-ca.key" "$OUT/untrusted-ca.pem"
eckey "$OUT/untrusted.key"
sign untrusted "$OUT/untrusted-ca.pem" "$W/untrusted-ca.key" "$OUT/untrusted.key" mx.test \
    "$OUT/untrusted.pem" leaf_ext -days 3650

# Client certificate, signed by the root.
eckey "$OUT/client.key"
SAN="DNS:client.test" EKU="clientAuth" sign root "$OUT/ca.pem" "$OUT/ca.key" \
    "$OUT/client.key" client.test "$OUT/client.pem" leaf_ext -days 3650

# ---- certificates that are wrong on purpose --------------------------
newdb inter1
newdb sha1root
newdb rsaroot

leaf_from_inter sha1 ec mx.test -days 3650 -md sha1
leaf_from_inter ec521 ec521 mx.test -days 3650
leaf_from_inter dsa dsa mx.test -days 3650
leaf_from_inter soon ec mx.test -days 10
eckey "$OUT/nosan.key"
sign inter "$OUT/inter.pem" "$OUT/inter.key" "$OUT/nosan.key" mx.test "$W/nosan-leaf.pem" \
    leaf_nosan_ext -days 3650
cat "$W/nosan-leaf.pem" "$OUT/inter.pem" >"$OUT/nosan.pem"

# An intermediate the root signed with SHA-1, and a SHA-256 leaf under it.
eckey "$W/inter1.key"
sign root "$OUT/ca.pem" "$OUT/ca.key" "$W/inter1.key" "tern test sha1 intermediate" \
    "$W/inter1.pem" inter_ext -days 3650 -md sha1
eckey "$OUT/sha1inter.key"
sign inter1 "$W/inter1.pem" "$W/inter1.key" "$OUT/sha1inter.key" mx.test \
    "$W/sha1inter-leaf.pem" leaf_ext -days 3650
cat "$W/sha1inter-leaf.pem" "$W/inter1.pem" >"$OUT/sha1inter.pem"

# A self-signed root made with SHA-1 (nobody checks a root's own signature).
eckey "$W/sha1root-ca.key"
run openssl req -config "$W/ca.cnf" -x509 -new -key "$W/sha1root-ca.key" -subj "/CN=tern sha1 root" \
    -days 3650 -sha1 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$OUT/sha1root-ca.pem"
eckey "$OUT/sha1root.key"
sign sha1root "$OUT/sha1root-ca.pem" "$W/sha1root-ca.key" "$OUT/sha1root.key" \
    mx.test "$W/sha1root-leaf.pem" leaf_ext -days 3650
cat "$W/sha1root-leaf.pem" "$OUT/sha1root-ca.pem" >"$OUT/sha1root.pem"

# MD5 needs an RSA signer (there is no ECDSA with MD5).
rsakey "$W/rsaroot.key" 2048
run openssl req -config "$W/ca.cnf" -x509 -new -key "$W/rsaroot.key" -subj "/CN=tern test rsa root" \
    -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$W/rsaroot.pem"
rsakey "$OUT/md5.key" 2048
sign rsaroot "$W/rsaroot.pem" "$W/rsaroot.key" "$OUT/md5.key" mx.test \
    "$OUT/md5.pem" leaf_ext -days 3650 -md md5

# A client certificate whose EKU names only serverAuth.
eckey "$OUT/client-serverauth.key"
SAN="DNS:client.test" EKU="serverAuth" sign root "$OUT/ca.pem" "$OUT/ca.key" \
    "$OUT/client-serverauth.key" client.test "$OUT/client-serverauth.pem" leaf_ext -days 3650

mv -f "$OUT"/* "$FINAL"/
rm -rf "$W"
: >"$FINAL/.complete"
[ $VERBOSE = 1 ] && echo "gen-test-certs: wrote $FINAL"
exit 0
