package pages

import "testing"

func TestHashedAssetNames(t *testing.T) {
	for name, want := range map[string]bool{
		"index-3f2a1b9c.js": true, "main.3f2a1b9c.css": true, "chunk-BzX3a9Kc.js": true,
		"index.html": false, "polyfills.js": false, "index-polyfills.js": false, "logo.svg": false,
	} {
		if got := isHashedAsset(name); got != want {
			t.Errorf("isHashedAsset(%q) = %v; want %v", name, got, want)
		}
	}
}
