// Package parley implements the Parley v1 wire protocol (docs/PROTOCOL.md):
// byte layouts, certificates, the Noise XX handshake with identity binding,
// SecureMessage sealing and opening, replay protection, delivery receipts,
// gateway proofs, and the audit log with its Merkle tree.
package parley

import (
	"errors"
	"fmt"
)

// Error codes of PROTOCOL.md §11 (and the §15.8 API codes used here).
const (
	CodeMalformed          = "malformed"
	CodeUnsupportedVersion = "unsupported_version"
	CodeUnknownSession     = "unknown_session"
	CodeBadSignature       = "bad_signature"
	CodeBadTag             = "bad_tag"
	CodeDecryptFailed      = "decrypt_failed"
	CodeBadCommitment      = "bad_commitment"
	CodeReplay             = "replay"
	CodeStaleTimestamp     = "stale_timestamp"
	CodeFutureTimestamp    = "future_timestamp"
	CodeRevoked            = "revoked"
	CodeRevocationStale    = "revocation_stale"
	CodeExpired            = "expired"
	CodeNotYetValid        = "not_yet_valid"
	CodeUnknownIssuer      = "unknown_issuer"
	CodeBadCertificate     = "bad_certificate"
	CodeIdentityMismatch   = "identity_mismatch"
	CodeBadBinding         = "bad_binding"
	CodeHandshakeFailed    = "handshake_failed"
	CodeNonceExhausted     = "nonce_exhausted"
	CodeTooLarge           = "too_large"
	CodePermissionDenied   = "permission_denied"
	CodePolicyDenied       = "policy_denied"
)

// Error is a protocol failure carrying a stable §11 code. Only the code is
// meant for a peer; the message is local detail. Cause, when set, is the
// failure that led to this one (local detail too: a bad_signature whose
// signer_certificate was refused carries that refusal, §17.8).
type Error struct {
	Code    string
	Message string
	Cause   error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Code + ": " + e.Message + " (" + e.Cause.Error() + ")"
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns Cause (errors.Unwrap, errors.Is). CodeOf reads the outermost
// code, so a cause never changes the code a caller acts on.
func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the §11 code of err, or "" when err is not a protocol error.
func CodeOf(err error) string {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
