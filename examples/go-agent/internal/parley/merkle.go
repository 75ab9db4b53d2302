package parley

import "bytes"

// Merkle tree of §9.3: RFC 9162 §2.1 with BLAKE3 as HASH.

// MaxProofHashes bounds inclusion and consistency proofs (§9.3).
const MaxProofHashes = 106

// LeafHash is BLAKE3(0x00 ‖ leaf_data).
func LeafHash(leafData []byte) []byte {
	return Hash(append([]byte{0x00}, leafData...))
}

// NodeHash is BLAKE3(0x01 ‖ left ‖ right).
func NodeHash(left, right []byte) []byte {
	b := make([]byte, 0, 65)
	b = append(b, 0x01)
	b = append(b, left...)
	return Hash(append(b, right...))
}

// EmptyRoot is MTH({}) = BLAKE3("").
func EmptyRoot() []byte { return Hash(nil) }

// splitPoint is the largest power of two smaller than n (n ≥ 2).
func splitPoint(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// MerkleRoot is MTH over the given leaf hashes.
func MerkleRoot(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		return EmptyRoot()
	case 1:
		return leaves[0]
	}
	k := splitPoint(len(leaves))
	return NodeHash(MerkleRoot(leaves[:k]), MerkleRoot(leaves[k:]))
}

// InclusionProof is RFC 9162 PATH(m, D[n]) over leaf hashes.
func InclusionProof(m int, leaves [][]byte) [][]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := splitPoint(len(leaves))
	if m < k {
		return append(InclusionProof(m, leaves[:k]), MerkleRoot(leaves[k:]))
	}
	return append(InclusionProof(m-k, leaves[k:]), MerkleRoot(leaves[:k]))
}

// ConsistencyProof is RFC 9162 PROOF(m, D[n]); empty for m = 0 or m = n.
func ConsistencyProof(m int, leaves [][]byte) [][]byte {
	if m == 0 || m == len(leaves) {
		return nil
	}
	return subproof(m, leaves, true)
}

func subproof(m int, leaves [][]byte, complete bool) [][]byte {
	n := len(leaves)
	if m == n {
		if complete {
			return nil
		}
		return [][]byte{MerkleRoot(leaves)}
	}
	k := splitPoint(n)
	if m <= k {
		return append(subproof(m, leaves[:k], complete), MerkleRoot(leaves[k:]))
	}
	return append(subproof(m-k, leaves[k:], false), MerkleRoot(leaves[:k]))
}

// VerifyInclusion is RFC 9162 §2.1.3.2.
func VerifyInclusion(leafIndex, treeSize uint64, leafHash []byte, path [][]byte, root []byte) bool {
	if leafIndex >= treeSize || len(path) > MaxProofHashes {
		return false
	}
	fn, sn := leafIndex, treeSize-1
	r := leafHash
	for _, p := range path {
		if sn == 0 {
			return false
		}
		if fn&1 == 1 || fn == sn {
			r = NodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = NodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && bytes.Equal(r, root)
}

// VerifyConsistency is RFC 9162 §2.1.4.2, with Parley's rules outside
// 0 < first < second: equal sizes need an empty proof and equal roots, size
// 0 needs an empty proof and first_root = MTH({}).
func VerifyConsistency(first, second uint64, firstRoot, secondRoot []byte, path [][]byte) bool {
	switch {
	case first > second || len(path) > MaxProofHashes:
		return false
	case first == second:
		return len(path) == 0 && bytes.Equal(firstRoot, secondRoot)
	case first == 0:
		return len(path) == 0 && bytes.Equal(firstRoot, EmptyRoot())
	case len(path) == 0:
		return false
	}
	if first&(first-1) == 0 { // an exact power of two
		path = append([][]byte{firstRoot}, path...)
	}
	fn, sn := first-1, second-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return false
		}
		if fn&1 == 1 || fn == sn {
			fr = NodeHash(c, fr)
			sr = NodeHash(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = NodeHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	return bytes.Equal(fr, firstRoot) && bytes.Equal(sr, secondRoot) && sn == 0
}
