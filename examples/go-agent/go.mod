module parley/go-agent

go 1.19

require (
	github.com/flynn/noise v1.0.0
	golang.org/x/crypto v0.4.0
	google.golang.org/grpc v1.33.2
	google.golang.org/protobuf v1.28.1
	lukechampine.com/blake3 v1.1.7
)

require (
	github.com/golang/protobuf v1.5.2 // indirect
	github.com/klauspost/cpuid/v2 v2.0.9 // indirect
	golang.org/x/net v0.3.0 // indirect
	golang.org/x/sys v0.5.0 // indirect
	golang.org/x/text v0.7.0 // indirect
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013 // indirect
)

replace (
	cloud.google.com/go/compute/metadata => ./third_party/cloud.google.com_go_compute_metadata
	github.com/cncf/udpa/go => ./third_party/github.com_cncf_udpa_go
	github.com/envoyproxy/go-control-plane => ./third_party/github.com_envoyproxy_go-control-plane
	github.com/flynn/noise => /usr/share/gocode/src/github.com/flynn/noise
	github.com/golang/glog => ./third_party/github.com_golang_glog
	github.com/golang/protobuf => /usr/share/gocode/src/github.com/golang/protobuf
	github.com/google/go-cmp => /usr/share/gocode/src/github.com/google/go-cmp
	github.com/google/uuid => ./third_party/github.com_google_uuid
	github.com/klauspost/cpuid/v2 => /usr/share/gocode/src/github.com/klauspost/cpuid/v2
	golang.org/x/crypto => /usr/share/gocode/src/golang.org/x/crypto
	golang.org/x/lint => ./third_party/golang.org_x_lint
	golang.org/x/mod => ./third_party/golang.org_x_mod
	golang.org/x/net => /usr/share/gocode/src/golang.org/x/net
	golang.org/x/oauth2 => /usr/share/gocode/src/golang.org/x/oauth2
	golang.org/x/sys => /usr/share/gocode/src/golang.org/x/sys
	golang.org/x/term => /usr/share/gocode/src/golang.org/x/term
	golang.org/x/text => /usr/share/gocode/src/golang.org/x/text
	golang.org/x/tools => ./third_party/golang.org_x_tools
	google.golang.org/appengine => ./third_party/google.golang.org_appengine
	google.golang.org/genproto => /usr/share/gocode/src/google.golang.org/genproto
	google.golang.org/grpc => /usr/share/gocode/src/google.golang.org/grpc
	google.golang.org/protobuf => /usr/share/gocode/src/google.golang.org/protobuf
	gopkg.in/check.v1 => ./third_party/gopkg.in_check.v1
	honnef.co/go/tools => ./third_party/honnef.co_go_tools
	lukechampine.com/blake3 => /usr/share/gocode/src/lukechampine.com/blake3
)
