#!/usr/bin/env bash
# winipam installed on the cluster of scripts/cluster.sh, as an admin would: the image built
# (scripts/image.sh) and imported into the node's containerd, two Windows nodes from KWOK with
# an instance behind each in moto (an m5.large and a c5.xlarge), and `helm install` of the chart
# with its defaults except the image and the EC2 endpoint.
#
#   cluster-winipam.sh install    needs the cluster up (eval "$(scripts/cluster.sh env)")
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

log() { printf 'cluster-winipam: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

: "${WINIPAM_CLUSTER_DIR:?run eval \"\$(scripts/cluster.sh env)\" first}"
TAG=dev

# The moto instances behind the Windows nodes, made with the boto3 that moto's virtualenv has.
# Prints one line per node: NAME INSTANCE-TYPE INSTANCE-ID.
launch_instances() {
  eval "$("$root/scripts/moto.sh" env)"
  "$(dirname "$WINIPAM_MOTO_SERVER_BIN")/python" - "$WINIPAM_CLUSTER_EC2_ENDPOINT" <<'EOF'
import sys
import boto3

ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
vpc = ec2.create_vpc(CidrBlock="10.210.0.0/16")["Vpc"]["VpcId"]
for index, (name, itype) in enumerate([("win-m5", "m5.large"), ("win-c5", "c5.xlarge")]):
    # A subnet per node: moto draws addresses without looking at other ENIs.
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.210.{index * 16}.0/20",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(ImageId="ami-03cf127a", InstanceType=itype, SubnetId=subnet,
                                 MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    print(name, itype, instance)
EOF
}

add_nodes() {
  local name itype instance
  while read -r name itype instance; do
    kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  labels:
    type: kwok
    kubernetes.io/os: windows
    kubernetes.io/hostname: $name
    node.kubernetes.io/instance-type: $itype
  annotations:
    kwok.x-k8s.io/node: fake
spec:
  providerID: aws:///us-east-1a/$instance
EOF
    log "Windows node $name ($itype, $instance)"
  done
}

install() {
  local archive="$WINIPAM_CLUSTER_DIR/winipam-$TAG.tar"
  "$root/scripts/image.sh" build "$TAG" "$archive"
  ctr --address "$WINIPAM_CLUSTER_CONTAINERD_SOCKET" --namespace k8s.io images import "$archive" >/dev/null
  launch_instances | add_nodes
  "$WINIPAM_HELM_BIN" upgrade --install winipam "$root/deploy/helm/winipam" \
    --namespace winipam-system --create-namespace --wait --timeout 180s \
    --set image.repository=localhost/winipam --set image.tag="$TAG" --set image.pullPolicy=Never \
    --set region=us-east-1 \
    --set "extraEnv[0].name=WINIPAM_EC2_ENDPOINT" --set "extraEnv[0].value=$WINIPAM_CLUSTER_EC2_ENDPOINT" \
    --set "extraEnv[1].name=AWS_ACCESS_KEY_ID" --set "extraEnv[1].value=testing" \
    --set "extraEnv[2].name=AWS_SECRET_ACCESS_KEY" --set "extraEnv[2].value=testing" >&2
  log "winipam installed"
}

case "${1:-}" in
  install) install ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
