package vectors

import (
	"bytes"
	"os"
	"testing"
)

// The repository's conformance vectors, when present.
const repoVectors = "../../../../docs/conformance/parley-v1.json"

func TestConformanceVectors(t *testing.T) {
	if _, err := os.Stat(repoVectors); err != nil {
		t.Skip("no vector file:", err)
	}
	var out bytes.Buffer
	res, err := CheckFile(repoVectors, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if res.Failed != 0 || res.Passed == 0 {
		t.Fatalf("%d checks passed, %d failed", res.Passed, res.Failed)
	}
}
