#!/usr/bin/env bash
# Builds the Parley Go example agent from Debian's Go packages, offline.
# Generates the protobuf/gRPC code from proto/parley/v1 into internal/gen
# (gitignored), then builds bin/parley-go-agent. Works from any directory.
# Usage: build.sh [--check]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
proto_dir="$repo/proto"
module="parley/go-agent"
gen_pkg="$module/internal/gen/parleyv1"

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (see README.md for the Debian packages)" >&2; exit 1; }
done

# The .proto files carry no go_package option: map each one to the Go package here.
go_opts=(--go_opt="module=$module")
grpc_opts=(--go-grpc_opt="module=$module")
protos=()
for f in "$proto_dir"/parley/v1/*.proto; do
  rel="parley/v1/$(basename "$f")"
  protos+=("$rel")
  go_opts+=(--go_opt="M$rel=$gen_pkg")
  grpc_opts+=(--go-grpc_opt="M$rel=$gen_pkg")
done

rm -rf "$here/internal/gen"
mkdir -p "$here/internal/gen/parleyv1" "$here/bin"
protoc -I "$proto_dir" -I /usr/include \
  --go_out="$here" "${go_opts[@]}" \
  --go-grpc_out="$here" "${grpc_opts[@]}" \
  "${protos[@]}"

cd "$here"
export GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOTELEMETRY=off
go build -o "$here/bin/parley-go-agent" ./cmd/parley-go-agent
echo "built $here/bin/parley-go-agent"

# ./build.sh --check also runs gofmt, go vet and the unit tests (which include
# the conformance vectors when docs/conformance/parley-v1.json exists).
if [[ "${1:-}" == "--check" ]]; then
  unformatted="$(gofmt -l cmd internal/parley internal/agent internal/gateway internal/vectors internal/directory internal/revocations)"
  if [[ -n "$unformatted" ]]; then echo "build.sh: not gofmt-formatted: $unformatted" >&2; exit 1; fi
  go vet ./...
  go test ./...
fi
