package proxy

import "testing"

func TestIsReservedHeader(t *testing.T) {
	for k, want := range map[string]bool{
		"X-Slicehub-User-Id":       true,
		"x-slicehub-gateway-token": true,
		"X_SLICEHUB_USER_ID":       true,
		"X-Slicehub_Anything":      true,
		"X-Slicehub-":              true,
		"X-Slicehub":               false,
		"X-Slicehubx-User":         false,
		"X-Forwarded-For":          false,
		"Slicehub-User-Id":         false,
	} {
		if got := IsReservedHeader([]byte(k)); got != want {
			t.Errorf("isReservedHeader(%q) = %v, want %v", k, got, want)
		}
	}
}
