package slicehub

import (
	"errors"
	"fmt"
	"testing"
)

func TestParseSliceIDAcceptsOneSpellingOnly(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "42": 42, "999999999999999999": 999999999999999999} {
		if got, ok := ParseSliceID(in); !ok || got != want {
			t.Errorf("ParseSliceID(%q) = %d, %v; want %d, true", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "0", "007", "-1", "+1", "1e3", " 1", "1 ", "0x10", "１", "42/../7", "9999999999999999999"} {
		if got, ok := ParseSliceID(in); ok {
			t.Errorf("ParseSliceID(%q) = %d, true; want rejected", in, got)
		}
	}
}

func TestLifecycleTransitions(t *testing.T) {
	allowed := []struct{ from, to SliceState }{
		{StateProvisioning, StateWarm}, {StateProvisioning, StateAssigned}, {StateWarm, StateAssigned},
		{StateAssigned, StateSuspended}, {StateSuspended, StateProvisioning}, {StateAssigned, StateProvisioning},
		{StateFailed, StateRetired}, {StateWarm, StateRetired},
	}
	for _, c := range allowed {
		if !CanTransition(c.from, c.to) {
			t.Errorf("CanTransition(%s, %s) = false; want allowed", c.from, c.to)
		}
	}
	forbidden := []struct{ from, to SliceState }{
		{StateRetired, StateProvisioning}, {StateRetired, StateWarm}, {StateSuspended, StateWarm},
		{StateFailed, StateAssigned}, {StateWarm, StateSuspended},
	}
	for _, c := range forbidden {
		if CanTransition(c.from, c.to) {
			t.Errorf("CanTransition(%s, %s) = true; want forbidden", c.from, c.to)
		}
	}
	for _, s := range States {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if SliceState("paused").Valid() {
		t.Error("an unknown state is valid")
	}
}

func TestErrorsKeepKindCodeAndHideInternals(t *testing.T) {
	base := Errorf("postgres.create_user", KindConflict, "email_taken", "that email is already registered")
	wrapped := fmt.Errorf("signup: %w", Wrap("gateway.signup", KindInternal, base))
	if KindOf(wrapped) != KindConflict || CodeOf(wrapped) != "email_taken" || MessageOf(wrapped) != "that email is already registered" {
		t.Errorf("wrapped: kind %s code %s message %q; want the inner conflict preserved", KindOf(wrapped), CodeOf(wrapped), MessageOf(wrapped))
	}
	internal := Wrap("postgres.slice", KindInternal, errors.New("pq: password authentication failed for user wa_slice_7"))
	if MessageOf(internal) != "internal error" || CodeOf(internal) != "internal" {
		t.Errorf("internal error shows %q / %q; want a generic message", MessageOf(internal), CodeOf(internal))
	}
	if KindOf(errors.New("plain")) != KindInternal {
		t.Error("a plain error is not internal")
	}
	if Wrap("x", KindInternal, nil) != nil {
		t.Error("Wrap(nil) is not nil")
	}
	if DatabaseName(12) != "wa_slice_12" {
		t.Errorf("DatabaseName(12) = %s", DatabaseName(12))
	}
}

func TestKindsMapToHTTPStatuses(t *testing.T) {
	want := map[Kind]int{KindInternal: 500, KindInvalid: 400, KindUnauthorized: 401, KindPaymentRequired: 402,
		KindForbidden: 403, KindNotFound: 404, KindConflict: 409, KindTooLarge: 413, KindRateLimited: 429,
		KindUnavailable: 503, KindBadGateway: 502}
	for k, status := range want {
		if got := k.HTTPStatus(); got != status {
			t.Errorf("%s.HTTPStatus() = %d, want %d", k, got, status)
		}
	}
}
