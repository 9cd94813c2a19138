#!/usr/bin/env bash
# Makes a private PKI for the compose cluster over TLS, offline: a CA, a certificate per node
# (controller, broker1..3; each also valid for localhost and 127.0.0.1) and one for the CLI.
#
#   docker/gen-certs.sh [DIR]        # default docker/certs
#
# Then give each node, e.g. broker1:
#   WEIR_TLS_CERT_FILE=/certs/broker1.pem WEIR_TLS_KEY_FILE=/certs/broker1.key
#   WEIR_TLS_CA_FILE=/certs/ca.pem                  # its links to the controller and leaders
#   WEIR_TLS_CLIENT_CA_FILE=/certs/ca.pem           # optional: require client certificates
# and the CLI: weir --tls-ca DIR/ca.pem --tls-cert DIR/client.pem --tls-key DIR/client.key ...
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-docker/certs}
cargo run --quiet --example gen_certs -- "$dir" controller broker1 broker2 broker3
