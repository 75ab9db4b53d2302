// Command parley-go-agent is the Go example agent of the Parley protocol.
//
//	parley-go-agent vectors <path.json>
//	parley-go-agent run --gateway HOST:PORT --gateway-id ID --key FILE --cert FILE --trust-bundle FILE --peer AGENT_ID
//	                    [--registry HOST:PORT ...] [...]
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"parley/go-agent/internal/agent"
	"parley/go-agent/internal/directory"
	"parley/go-agent/internal/gateway"
	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
	"parley/go-agent/internal/revocations"
	"parley/go-agent/internal/vectors"
)

const usage = `usage:
  parley-go-agent vectors <path.json>
  parley-go-agent run --gateway HOST:PORT --gateway-id ID --key FILE --cert FILE
                      --trust-bundle FILE --peer AGENT_ID [--initiate] [--send N]
                      [--expect N] [--timeout-ms MS] [--rekey-threshold N]
                      [--offline-after N] [--passphrase-file FILE]
                      [--tls-ca FILE --tls-server-name NAME]
                      [--registry HOST:PORT [--registry-id HEX] [--registry-tls-ca FILE
                       --registry-tls-server-name NAME] [--revocation-max-age-ms MS]]
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "vectors":
		os.Exit(runVectors(os.Args[2:]))
	case "run":
		os.Exit(runAgent(os.Args[2:]))
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
}

func runVectors(args []string) int {
	if len(args) != 1 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	res, err := vectors.CheckFile(args[0], os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "parley-go-agent: %v\n", err)
		return 1
	}
	fmt.Printf("parley-go-agent: %d checks passed, %d failed\n", res.Passed, res.Failed)
	if res.Failed != 0 || res.Passed == 0 {
		return 1
	}
	return 0
}

func runAgent(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	gatewayAddr := fs.String("gateway", "", "gateway address HOST:PORT")
	gatewayID := fs.String("gateway-id", "", "expected gateway id (from the challenge)")
	keyFile := fs.String("key", "", "agent key file (§15.2)")
	passFile := fs.String("passphrase-file", "", "passphrase of a sealed key file (or env PARLEY_AGENT_PASSPHRASE)")
	certFile := fs.String("cert", "", "file with the base64url-encoded AgentCertificate")
	bundleFile := fs.String("trust-bundle", "", "trust bundle JSON (§3.3)")
	peer := fs.String("peer", "", "agent id of the peer")
	initiate := fs.Bool("initiate", false, "start the handshake (else wait for the peer's)")
	send := fs.Int("send", 0, "messages to send")
	expect := fs.Int("expect", 0, "messages to receive")
	timeoutMs := fs.Int("timeout-ms", 30000, "overall timeout")
	offlineAfter := fs.Int("offline-after", 0, "after N messages received, end the stream and connect again when a line arrives on stdin (0: never)")
	rekey := fs.Uint("rekey-threshold", parley.DefaultRekeyThreshold, "messages per epoch for sessions this agent initiates")
	tlsCA := fs.String("tls-ca", "", "CA certificate (PEM) for TLS 1.3; plaintext without it")
	tlsName := fs.String("tls-server-name", "", "TLS server name")
	registryAddr := fs.String("registry", "", "registry HOST:PORT whose signed revocation list this agent follows (§8.4), and where it looks a peer up for a first contact (§17.2 item 6)")
	registryIDHex := fs.String("registry-id", "", "expected registry id, 32 hex digits (default: the registry's answer)")
	registryCA := fs.String("registry-tls-ca", "", "CA certificate (PEM) of the registry; plaintext without it (loopback only)")
	registryName := fs.String("registry-tls-server-name", "", "registry TLS server name")
	revocationMaxAge := fs.Int64("revocation-max-age-ms", revocations.DefaultMaxAgeMs, "freshness bound of the revocation list (from its signed head)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(code string, err error) int {
		agent.ReportError(parley.Errorf(code, "%v", err))
		return 1
	}
	switch {
	case *gatewayAddr == "" || *gatewayID == "" || *keyFile == "" || *certFile == "" || *bundleFile == "" || *peer == "":
		return fail("usage", fmt.Errorf("--gateway, --gateway-id, --key, --cert, --trust-bundle and --peer are required"))
	case *send < 0 || *expect < 0 || *offlineAfter < 0 || *timeoutMs <= 0:
		return fail("usage", fmt.Errorf("--send, --expect, --offline-after must be ≥ 0 and --timeout-ms > 0"))
	case *rekey < 1 || *rekey > parley.MaxRekeyThreshold:
		return fail("usage", fmt.Errorf("--rekey-threshold must be in 1..%d", parley.MaxRekeyThreshold))
	}
	passphrase, err := readPassphrase(*passFile)
	if err != nil {
		return fail("key_file", err)
	}
	key, err := parley.LoadAgentKey(*keyFile, passphrase)
	if err != nil {
		return fail("key_file", err)
	}
	certText, err := os.ReadFile(*certFile)
	if err != nil {
		return fail("cert_file", err)
	}
	cert, err := parley.DecodeCertificateLine(strings.TrimSpace(string(certText)))
	if err != nil {
		return fail("cert_file", err)
	}
	if !bytes.Equal(cert.GetIdentityPublicKey(), key.Public().(ed25519.PublicKey)) {
		return fail("cert_file", fmt.Errorf("the certificate is not for the key in %s", *keyFile))
	}
	bundleText, err := os.ReadFile(*bundleFile)
	if err != nil {
		return fail("trust_bundle", err)
	}
	trust, err := parley.ParseTrustBundle(bundleText)
	if err != nil {
		return fail("trust_bundle", err)
	}
	// Our own certificate must verify too, or the gateway and peer refuse it.
	if err := trust.VerifyCertificate(cert, time.Now().UnixMilli(), ""); err != nil {
		agent.ReportError(err)
		return 1
	}
	var checker parley.RevocationChecker
	var dir agent.Directory
	identity := &parley.Identity{AgentID: cert.GetAgentId(), Key: key, Certificate: cert}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if *registryAddr == "" {
		agent.Warn("revocation_unchecked", "no --registry: peers' revocation is not checked (PROTOCOL.md §8.4 requires it)")
	} else {
		reg, err := followRegistry(ctx, *registryAddr, *registryIDHex, gateway.DialOptions{CAFile: *registryCA, ServerName: *registryName}, trust, *revocationMaxAge)
		if err != nil {
			return fail(parley.CodeRevocationStale, err)
		}
		checker = reg.follower
		// First contact (§17.2 item 6): the peer's certificate read from the
		// same registry, signed as this agent, verified with this revocation data.
		dir = directory.New(directory.Config{Client: reg.client, RegistryID: reg.id, Identity: identity, Trust: trust, Revocations: reg.follower})
	}
	err = agent.Run(ctx, agent.Config{
		Gateway: *gatewayAddr, GatewayID: *gatewayID,
		Dial:     gateway.DialOptions{CAFile: *tlsCA, ServerName: *tlsName},
		Identity: identity, Directory: dir,
		Trust: trust, Peer: *peer, Initiate: *initiate, Send: *send, Expect: *expect,
		Timeout: time.Duration(*timeoutMs) * time.Millisecond, RekeyThreshold: uint32(*rekey),
		Revocations: checker, Out: os.Stdout, OfflineAfter: *offlineAfter, Resume: os.Stdin,
	})
	if err != nil {
		agent.ReportError(err)
		return 1
	}
	return 0
}

// registry is the connection to --registry: its client, its id and the
// follower of its revocation list.
type registry struct {
	client   pb.RegistryServiceClient
	id       []byte
	follower *revocations.Follower
}

// followRegistry syncs the registry's revocation list once (failing if it
// cannot) and keeps it current in the background every 5 s.
func followRegistry(ctx context.Context, address, idHex string, dial gateway.DialOptions, trust *parley.TrustBundle, maxAgeMs int64) (*registry, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cc, err := gateway.Dial(dctx, address, dial)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", address, err)
	}
	client := pb.NewRegistryServiceClient(cc)
	var registryID []byte
	if idHex != "" {
		if registryID, err = hex.DecodeString(idHex); err != nil || len(registryID) != 16 {
			return nil, fmt.Errorf("--registry-id must be 32 hex digits")
		}
	} else {
		tb, err := client.GetTrustBundle(dctx, &pb.GetTrustBundleRequest{})
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", address, err)
		}
		if registryID = tb.GetRegistryId(); len(registryID) != 16 {
			return nil, fmt.Errorf("registry %s: registry id is not 16 bytes", address)
		}
	}
	f := revocations.New(client, registryID, trust, maxAgeMs)
	if err := f.Sync(dctx); err != nil {
		return nil, fmt.Errorf("revocation list of %s: %w", address, err)
	}
	go f.Run(ctx, 5*time.Second, func(err error) { agent.Warn(parley.CodeRevocationStale, err.Error()) })
	return &registry{client: client, id: registryID, follower: f}, nil
}

// readPassphrase returns the passphrase for a sealed key file, or nil.
func readPassphrase(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		return bytes.TrimRight(b, "\r\n"), nil
	}
	if p := os.Getenv("PARLEY_AGENT_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}
