package main

import (
	"testing"

	"github.com/payworker/payworker/internal/streams"
)

// TestStreamSettingsAgree checks that the worker reads every stream setting
// as streams.Settings, which `publisher provision` uses, does: the same
// names, defaults, accepted values, results and error messages, so that
// both provision the same streams from the same environment.
func TestStreamSettingsAgree(t *testing.T) {
	worker := map[string]setting{}
	for _, s := range settings() {
		worker[s.name] = s
	}
	samples := []string{"", "0", "1", "3", "5", "7", "-1", "10m", "200h", "1h30m", "-5s", "1048576", "1MiB", "512MiB", "10GiB",
		"10GB", "1KiB", "abc", "a.b", "PAY_2", "payments-x"}
	for _, ss := range streams.Settings() {
		ws, ok := worker[ss.Name]
		if !ok {
			t.Errorf("the worker has no setting %s", ss.Name)
			continue
		}
		for _, v := range append([]string{ss.Default, ws.def}, samples...) {
			wc := Config{Streams: streams.Default()}
			sc := streams.Default()
			werr, serr := ws.set(&wc, v), ss.Set(&sc, v)
			switch {
			case (werr == nil) != (serr == nil):
				t.Errorf("%s=%q: worker error %v, streams.Settings error %v", ss.Name, v, werr, serr)
			case werr != nil && werr.Error() != serr.Error():
				t.Errorf("%s=%q: worker says %q, streams.Settings %q", ss.Name, v, werr, serr)
			case werr == nil && wc.Streams != sc:
				t.Errorf("%s=%q: worker reads %+v, streams.Settings %+v", ss.Name, v, wc.Streams, sc)
			}
		}
		wd, sd := Config{Streams: streams.Default()}, streams.Default()
		if err := ws.set(&wd, ws.def); err != nil {
			t.Fatal(err)
		}
		if err := ss.Set(&sd, ss.Default); err != nil {
			t.Fatal(err)
		}
		if wd.Streams != sd || sd != streams.Default() {
			t.Errorf("%s default: worker %q, streams.Settings %q: read differently, or not streams.Default", ss.Name, ws.def, ss.Default)
		}
	}
}
