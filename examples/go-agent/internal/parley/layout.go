package parley

import (
	"encoding/binary"
	"fmt"
)

// Layout builds the explicit byte layouts of PROTOCOL.md §2. Every layout
// starts with str(domain). A field of the wrong fixed length records an error
// (reported by Bytes) instead of producing ambiguous bytes.
type Layout struct {
	buf []byte
	err error
}

// NewLayout starts a layout with its domain tag.
func NewLayout(domain string) *Layout {
	l := &Layout{}
	return l.Str(domain)
}

// U8 appends one byte.
func (l *Layout) U8(x uint8) *Layout {
	l.buf = append(l.buf, x)
	return l
}

// U32 appends 4 bytes big-endian.
func (l *Layout) U32(x uint32) *Layout {
	l.buf = binary.BigEndian.AppendUint32(l.buf, x)
	return l
}

// U64 appends 8 bytes big-endian.
func (l *Layout) U64(x uint64) *Layout {
	l.buf = binary.BigEndian.AppendUint64(l.buf, x)
	return l
}

// I64 appends 8 bytes big-endian two's complement.
func (l *Layout) I64(x int64) *Layout {
	return l.U64(uint64(x))
}

// Fixed appends exactly n bytes; b must have length n.
func (l *Layout) Fixed(b []byte, n int, name string) *Layout {
	if len(b) != n && l.err == nil {
		l.err = Errorf(CodeMalformed, "%s must be %d bytes, got %d", name, n, len(b))
	}
	l.buf = append(l.buf, b...)
	return l
}

// Var appends u32(len(b)) ‖ b.
func (l *Layout) Var(b []byte) *Layout {
	if uint64(len(b)) > 0xffffffff && l.err == nil {
		l.err = fmt.Errorf("layout field too long")
	}
	l.U32(uint32(len(b)))
	l.buf = append(l.buf, b...)
	return l
}

// Str appends var(UTF-8(s)).
func (l *Layout) Str(s string) *Layout {
	return l.Var([]byte(s))
}

// List appends u32(count) ‖ str(x₁) ‖ … ‖ str(xₙ).
func (l *Layout) List(xs []string) *Layout {
	l.U32(uint32(len(xs)))
	for _, x := range xs {
		l.Str(x)
	}
	return l
}

// Bytes returns the layout, or the first error recorded while building it.
func (l *Layout) Bytes() ([]byte, error) {
	if l.err != nil {
		return nil, l.err
	}
	return l.buf, nil
}
