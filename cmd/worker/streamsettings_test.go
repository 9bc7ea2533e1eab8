package main

import (
	"testing"

	"github.com/payworker/payworker/internal/streams"
)

// TestStreamSettingsAreStreamsSettings checks that the worker has every
// stream setting of streams.Settings, which `publisher provision` uses, with
// its default, reading it into Config.Streams as streams.Settings does, so
// that both provision the same streams from the same environment.
func TestStreamSettingsAreStreamsSettings(t *testing.T) {
	worker := map[string]setting{}
	for _, s := range settings() {
		worker[s.name] = s
	}
	for _, ss := range streams.Settings() {
		ws, ok := worker[ss.Name]
		if !ok {
			t.Errorf("the worker has no setting %s", ss.Name)
			continue
		}
		if ws.def != ss.Default {
			t.Errorf("%s default: worker %q, streams.Settings %q", ss.Name, ws.def, ss.Default)
		}
		for _, v := range []string{ss.Default, "3", "10m", "512MiB", "abc", "-1"} {
			wc, sc := Config{Streams: streams.Default()}, streams.Default()
			werr, serr := ws.set(&wc, v), ss.Set(&sc, v)
			if (werr == nil) != (serr == nil) || werr == nil && wc.Streams != sc || werr != nil && werr.Error() != serr.Error() {
				t.Errorf("%s=%q: worker reads %+v, %v; streams.Settings %+v, %v", ss.Name, v, wc.Streams, werr, sc, serr)
			}
		}
	}
}
