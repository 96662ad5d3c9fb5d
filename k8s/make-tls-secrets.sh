#!/bin/sh
# The TLS Secrets the manifests mount, made with `edgecode certs` (a CA kept in DIR/ca, and a
# certificate per pod whose identity names its role and pod: edgecode://worker/workers-edge-0-1):
#
#   k8s/make-tls-secrets.sh -w 3,3 > secrets.yaml      # base: 2 edges of 3 workers
#   kubectl apply -f secrets.yaml                      # before (or after) kubectl apply -k ...
#
#   -n NAMESPACE      namespace of the Secrets and of the pods' DNS names (default edgecode)
#   -d DIR            where the CA and every certificate are kept (default ./edgecode-certs)
#   -w N,N,...        workers of edge-0, edge-1, ... (one number per edge; default 3,3)
#   -p N              gossip peers peers-0 .. peers-(N-1) (k8s/components/peers; default 0)
#   -D DAYS           validity of the node certificates (default 365)
#   -E COMMAND        the edgecode command (default edgecode)
#
# Secrets: edgecode-tls-coordinator and edgecode-tls-master (keys tls.crt, tls.key, ca.crt: the
# layout of a cert-manager Certificate's Secret), edgecode-tls-edges, edgecode-tls-workers and,
# with -p, edgecode-tls-peers (one POD.crt and POD.key per pod, plus ca.crt). DIR/user holds a certificate for you
# (edgecode://user/user): `edgecode train --master localhost:50051 --tls-dir DIR/user`. Keep DIR/ca
# secret; re-running reuses the CA and issues fresh certificates. With cert-manager, issue the same
# identities (uris: ["edgecode://worker/POD"]) instead; see docs/notes/security.md.
set -eu
ns=edgecode dir=./edgecode-certs workers=3,3 peers=0 days=365 edgecode=edgecode
while getopts n:d:w:p:D:E: opt; do
  case "$opt" in
    n) ns=$OPTARG ;;
    d) dir=$OPTARG ;;
    w) workers=$OPTARG ;;
    p) peers=$OPTARG ;;
    D) days=$OPTARG ;;
    E) edgecode=$OPTARG ;;
    *) sed -n '2,21p' "$0" >&2; exit 2 ;;
  esac
done
umask 077
$edgecode certs init --dir "$dir/ca" --exist-ok --name "edgecode $ns CA" >&2

issue() {  # ROLE NAME DNS...
  role=$1 name=$2
  shift 2
  dns=""
  for d in "$@"; do dns="$dns --dns $d"; done
  # shellcheck disable=SC2086  # word splitting of $dns is wanted
  $edgecode certs issue "$role" "$name" --dir "$dir/ca" --out "$dir/$name" --days "$days" $dns >&2
}

secret() {  # NAME FROM-FILE...
  name=$1
  shift
  echo "---"
  kubectl create secret generic "$name" -n "$ns" --dry-run=client -o yaml "$@"
}

issue coordinator coordinator "coordinator.$ns.svc" coordinator
# localhost: `kubectl port-forward svc/master 50051` clients dial localhost:50051
issue master master "master.$ns.svc" master localhost
issue user user
secret edgecode-tls-coordinator --from-file="$dir/coordinator/tls.crt" \
  --from-file="$dir/coordinator/tls.key" --from-file="$dir/ca/ca.crt"
secret edgecode-tls-master --from-file="$dir/master/tls.crt" --from-file="$dir/master/tls.key" \
  --from-file="$dir/ca/ca.crt"

edge_files="" worker_files="" e=0
for count in $(echo "$workers" | tr ',' ' '); do
  edge="edge-$e"
  issue edge "$edge" "$edge.edge.$ns.svc"
  edge_files="$edge_files --from-file=$edge.crt=$dir/$edge/tls.crt --from-file=$edge.key=$dir/$edge/tls.key"
  w=0
  while [ "$w" -lt "$count" ]; do
    pod="workers-$edge-$w"
    issue worker "$pod" "$pod.workers-$edge.$ns.svc"
    worker_files="$worker_files --from-file=$pod.crt=$dir/$pod/tls.crt --from-file=$pod.key=$dir/$pod/tls.key"
    w=$((w + 1))
  done
  e=$((e + 1))
done
# shellcheck disable=SC2086
secret edgecode-tls-edges $edge_files --from-file="$dir/ca/ca.crt"
# shellcheck disable=SC2086
secret edgecode-tls-workers $worker_files --from-file="$dir/ca/ca.crt"

if [ "$peers" -gt 0 ]; then
  peer_files="" i=0
  while [ "$i" -lt "$peers" ]; do
    pod="peers-$i"
    issue peer "$pod" "$pod.peers.$ns.svc"
    peer_files="$peer_files --from-file=$pod.crt=$dir/$pod/tls.crt --from-file=$pod.key=$dir/$pod/tls.key"
    i=$((i + 1))
  done
  # shellcheck disable=SC2086
  secret edgecode-tls-peers $peer_files --from-file="$dir/ca/ca.crt"
fi
