package vectors

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

func (c *checker) checkAudit() {
	a := c.file.Audit
	writer, ok := c.keys[a.Writer]
	g := c.group("audit")
	var leaves [][]byte
	g.run("writer", func(e *entry) {
		if !ok {
			e.failf("writer %q is not a key of the file", a.Writer)
		}
	})
	if !ok {
		g.done("")
		return
	}
	writerPub := writer.Public().(ed25519.PublicKey)
	writerID, _ := parley.KeyID(writerPub)
	prev := make([]byte, 32)
	for i, v := range a.Entries {
		g.run(fmt.Sprintf("entry %d", i), func(e *entry) {
			m := &pb.AuditMessage{
				Index: v.Index, MessageHash: e.hex("message_hash", v.MessageHash), SenderId: v.SenderID,
				RecipientId: v.RecipientID, TimestampMs: v.TimestampMs, MessageType: pb.MessageType(v.MessageType),
				Outcome: v.Outcome, PreviousHash: e.hex("previous_hash", v.PreviousHash),
				SignerKeyId: e.hex("signer_key_id", v.SignerKeyID), Signature: e.hex("signature", v.Signature),
			}
			if v.Index != uint64(i) {
				e.failf("index %d at position %d", v.Index, i)
			}
			if !bytes.Equal(m.PreviousHash, prev) {
				e.failf("previous_hash is not the entry hash of entry %d (§9.2)", i-1)
			}
			if !bytes.Equal(m.SignerKeyId, writerID) {
				e.failf("signer_key_id is not the writer's key id")
			}
			e.check(parley.CheckAuditEntry(m), "§9.1 rules")
			layout, err := parley.AuditEntryLayout(m)
			if !e.check(err, "layout") {
				return
			}
			e.eq("layout (§9.2)", layout, v.Layout)
			e.eq("signature", ed25519.Sign(writer, layout), v.Signature)
			if !parley.VerifyAuditEntry(m, writerPub) {
				e.failf("signature does not verify")
			}
			entryHash, _ := parley.AuditEntryHash(m)
			e.eq("entry_hash", entryHash, v.EntryHash)
			leaf, _ := parley.AuditLeafHash(m)
			e.eq("leaf_hash (§9.3)", leaf, v.LeafHash)
			encoded, _ := proto.Marshal(m)
			e.eq("encoded", encoded, v.Encoded)
			var dec pb.AuditMessage
			if err := proto.Unmarshal(e.hex("encoded", v.Encoded), &dec); err != nil || !proto.Equal(&dec, m) {
				e.failf("encoded does not decode to the listed fields")
			}
			prev = entryHash
			leaves = append(leaves, leaf)
		})
	}
	g.done("%d entries: layout, signature, chain, entry and leaf hashes, encoding", len(a.Entries))

	g = c.group("merkle")
	g.run("root", func(e *entry) {
		if a.TreeSize > len(leaves) {
			e.failf("tree_size %d > %d entries", a.TreeSize, len(leaves))
			return
		}
		e.eq("root (MTH)", parley.MerkleRoot(leaves[:a.TreeSize]), a.Root)
	})
	for _, v := range a.Inclusion {
		g.run(fmt.Sprintf("inclusion %d/%d", v.LeafIndex, v.TreeSize), func(e *entry) {
			if v.TreeSize > uint64(len(leaves)) || v.LeafIndex >= v.TreeSize {
				e.failf("sizes out of range")
				return
			}
			tree := leaves[:v.TreeSize]
			e.eq("root", parley.MerkleRoot(tree), v.Root)
			path := hexList(e, v.Path)
			if !equalPaths(parley.InclusionProof(int(v.LeafIndex), tree), path) {
				e.failf("path differs from PATH(m, D[n])")
			}
			if !parley.VerifyInclusion(v.LeafIndex, v.TreeSize, leaves[v.LeafIndex], path, e.hex("root", v.Root)) {
				e.failf("inclusion proof does not verify")
			}
			// A wrong leaf must not verify.
			other := leaves[(v.LeafIndex+1)%uint64(len(leaves))]
			if len(leaves) > 1 && parley.VerifyInclusion(v.LeafIndex, v.TreeSize, other, path, e.hex("root", v.Root)) {
				e.failf("inclusion proof verifies for another leaf")
			}
		})
	}
	for _, v := range a.Consistency {
		g.run(fmt.Sprintf("consistency %d→%d", v.First, v.Second), func(e *entry) {
			if v.Second > uint64(len(leaves)) || v.First > v.Second {
				e.failf("sizes out of range")
				return
			}
			e.eq("first_root", parley.MerkleRoot(leaves[:v.First]), v.FirstRoot)
			e.eq("second_root", parley.MerkleRoot(leaves[:v.Second]), v.SecondRoot)
			path := hexList(e, v.Path)
			if !equalPaths(parley.ConsistencyProof(int(v.First), leaves[:v.Second]), path) {
				e.failf("path differs from PROOF(m, D[n])")
			}
			if !parley.VerifyConsistency(v.First, v.Second, e.hex("first_root", v.FirstRoot), e.hex("second_root", v.SecondRoot), path) {
				e.failf("consistency proof does not verify")
			}
		})
	}
	g.done("root of %d, %d inclusion and %d consistency proofs recomputed and verified", a.TreeSize, len(a.Inclusion), len(a.Consistency))

	g = c.group("tree_heads")
	for _, v := range a.TreeHeads {
		g.run(fmt.Sprintf("size %d", v.TreeSize), func(e *entry) {
			if v.TreeSize > uint64(len(leaves)) {
				e.failf("tree_size out of range")
				return
			}
			e.eq("root", parley.MerkleRoot(leaves[:v.TreeSize]), v.Root)
			layout, err := parley.TreeHeadLayout(v.TreeSize, e.hex("root", v.Root), v.TimestampMs, e.hex("signer_key_id", v.SignerKeyID))
			if !e.check(err, "layout") {
				return
			}
			e.eq("layout (§9.4)", layout, v.Layout)
			c.checkSignature(e, a.Writer, layout, v.Signature)
		})
	}
	g.done("%d signed heads", len(a.TreeHeads))
}

func hexList(e *entry, xs []string) [][]byte {
	out := make([][]byte, len(xs))
	for i, x := range xs {
		out[i] = e.hex("path", x)
	}
	return out
}

func equalPaths(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if hex.EncodeToString(a[i]) != hex.EncodeToString(b[i]) {
			return false
		}
	}
	return true
}
